"""Encoder training data: texts to word pieces, with a class per text or a BIO tag per word.

``sequence_classification`` rows (``text``, ``label``) become the text's tokens and the label's
index. ``token_classification`` rows (``text`` + ``entities`` with character offsets, or CoNLL
``tokens`` + ``tags``, joined with spaces) become tokens with a tag index on each word's first word
piece and :data:`~adapterhub.entities.IGNORE` elsewhere; the words and their offsets come from the
fast tokenizer (:func:`adapterhub.entities.words_of`), as at inference.

>>> rows = canonical_token_rows([{"tokens": ["Pfizer", "rose"], "tags": ["B-ORG", "O"]}], origin="t.jsonl")
>>> rows[0]["text"], rows[0]["entities"]
('Pfizer rose', [{'start': 0, 'end': 6, 'label': 'ORG'}])
"""

from __future__ import annotations

from typing import Any

from ..entities import IGNORE, check_entities, conll_to_text, word_tags, words_of
from ..errors import DataError
from ..prompts import TaskSpec
from .examples import Example


def canonical_token_rows(rows: list[dict[str, Any]], *, origin: str) -> list[dict[str, Any]]:
    """Rows as ``{"text", "entities"}``: CoNLL ``tokens``/``tags`` rows are joined and converted."""
    out = []
    for number, row in enumerate(rows, 1):
        if row.get("tokens") is not None:
            if row.get("tags") is None:
                raise DataError(f"row {number} of {origin} has 'tokens' but no 'tags' (one BIO tag per token)")
            text, entities = conll_to_text(row["tokens"], row["tags"], where=f"row {number} of {origin}")
            out.append({"text": text, "entities": entities})
        elif row.get("text") is not None:
            out.append({"text": str(row["text"]), "entities": row.get("entities") or []})
        else:
            raise DataError(f"row {number} of {origin} needs 'text' and 'entities' (character offsets) or 'tokens' "
                            "and 'tags' (CoNLL); rename columns with data.fields")
    return out


def encode_rows(rows: list[dict[str, Any]], *, tokenizer: Any, task: TaskSpec, max_length: int,
                origin: str) -> list[Example]:
    """Encode canonical encoder rows (entities are checked and stored back sorted).

    Raises:
        DataError: an unknown label or entity type, bad offsets, an entity boundary inside a word,
            or texts longer than ``max_length`` tokens.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise DataError("encoder formats need a fast tokenizer (tokenizer.json) for word offsets")
    examples, too_long = [], []
    index = {label: i for i, label in enumerate(task.head_labels)}
    for number, row in enumerate(rows, 1):
        where = f"row {number} of {origin}"
        encoding = tokenizer(row["text"], return_offsets_mapping=True)
        if len(encoding["input_ids"]) > max_length:
            too_long.append((len(encoding["input_ids"]), number))
            continue
        ids = tuple(encoding["input_ids"])
        if task.type == "sequence_classification":
            label = str(row["label"])
            if label not in index:
                raise DataError(f"{where} has label {label!r}, which is not in data.labels {list(task.labels)}")
            examples.append(Example(ids, (index[label],)))
            continue
        row["entities"] = check_entities(row["text"], row["entities"], task.labels, where=where)
        words, firsts = words_of(encoding)
        _check_boundaries(row, words, where)
        labels = [IGNORE] * len(ids)
        for first, tag in zip(firsts, word_tags(words, row["entities"])):
            labels[first] = index[tag]
        examples.append(Example(ids, tuple(labels)))
    if too_long:
        needed, number = max(too_long)
        raise DataError(f"data.max_length={max_length} is shorter than {len(too_long)} text(s) of {origin} (longest: "
                        f"{needed} tokens, row {number}); raise data.max_length (at most 512) or split the texts")
    return examples


def _check_boundaries(row: dict[str, Any], words: list[tuple[int, int]], where: str) -> None:
    starts, ends = {start for start, _ in words}, {end for _, end in words}
    for entity in row["entities"]:
        if entity["start"] not in starts or entity["end"] not in ends:
            span = row["text"][entity["start"]:entity["end"]]
            raise DataError(f"{where}: entity {span!r} ({entity['start']}-{entity['end']}) does not start and end on "
                            "word boundaries of the tokenizer, so its tags cannot say where it is; fix the offsets")
