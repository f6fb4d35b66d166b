"""Scoring generated JSON answers against reference objects: validity, each field's accuracy, exact match.

An adapter that answers with a JSON object (the education adapter's ``{"subject": …, "level": …}``) is
judged on what a caller parses: an answer that is not JSON, or not an object that satisfies the
response schema, counts as wrong in every field.

>>> json_answer_metrics(['{"subject": "physics", "level": "primary"}', '{"subject": "physics"'],
...                     [{"subject": "physics", "level": "primary"}, {"subject": "biology", "level": "primary"}])
{'rows': 2, 'json_valid': 0.5, 'exact_match': 0.5, 'field_accuracy': {'level': 0.5, 'subject': 0.5}}
"""

from __future__ import annotations

import json
from typing import Any, Sequence


def parse_answer(text: str, schema: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The object ``text`` holds, or ``None`` when it is not a JSON object (or does not satisfy ``schema``)."""
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    if schema is not None:
        import jsonschema

        if not jsonschema.Draft202012Validator(schema).is_valid(value):
            return None
    return value


def json_answer_metrics(texts: Sequence[str], references: Sequence[dict[str, Any]], *,
                        schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validity, exact match and per-field accuracy of generated answers against reference objects.

    Args:
        texts: the generated answers, one per row.
        references: the expected objects (their keys are the fields scored).
        schema: a JSON schema the answers must satisfy to count as valid (``None``: any JSON object).

    Returns:
        ``{"rows", "json_valid", "exact_match", "field_accuracy": {field: accuracy}}`` (fractions, 4 places).
    """
    if len(texts) != len(references):
        raise ValueError(f"{len(texts)} answers for {len(references)} references")
    parsed = [parse_answer(text, schema) for text in texts]
    fields = sorted({key for reference in references for key in reference})
    rows = max(len(references), 1)

    def share(count: int) -> float:
        return round(count / rows, 4)

    return {"rows": len(references),
            "json_valid": share(sum(answer is not None for answer in parsed)),
            "exact_match": share(sum(answer == reference for answer, reference in zip(parsed, references))),
            "field_accuracy": {field: share(sum(answer is not None and answer.get(field) == reference.get(field)
                                                for answer, reference in zip(parsed, references)))
                               for field in fields}}
