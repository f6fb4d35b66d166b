"""Where entity predictions go wrong: overlap (partial-match) scores and the kind of every error.

Exact-span scoring (:func:`~adapterhub.training.encoder_metrics.entity_report`) counts a predicted entity
only when start, end and type match. Two views explain a miss:

* **overlap** precision/recall/F1 per type: a predicted entity counts when it shares at least one character
  with a gold entity of its type (recall: a gold entity counts when such a prediction overlaps it);
* **error kinds**: each predicted entity that is not an exact hit is ``boundary`` (it overlaps a gold entity
  of its type), else ``wrong_type`` (it overlaps a gold entity of another type only), else ``spurious``
  (no gold entity there); each gold entity that no prediction touches is ``missed``.

>>> gold = [[{"start": 0, "end": 10, "label": "SYMPTOM"}, {"start": 20, "end": 24, "label": "DRUG"}]]
>>> pred = [[{"start": 0, "end": 5, "label": "SYMPTOM"}, {"start": 30, "end": 33, "label": "DRUG"}]]
>>> error_kinds(pred, gold)["counts"]
{'boundary': 1, 'spurious': 1, 'wrong_type': 0, 'missed': 1}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

KINDS = ("boundary", "spurious", "wrong_type", "missed")

Entities = Sequence[Sequence[dict[str, Any]]]


def _overlaps(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return int(a["start"]) < int(b["end"]) and int(b["start"]) < int(a["end"])


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (int(a["start"]), int(a["end"]), a["label"]) == (int(b["start"]), int(b["end"]), b["label"])


def _prf(hit_predicted: int, predicted: int, hit_gold: int, gold: int) -> dict[str, Any]:
    precision = hit_predicted / predicted if predicted else 0.0
    recall = hit_gold / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4), "support": gold}


def overlap_report(predictions: Entities, references: Entities, *, types: Sequence[str]) -> dict[str, Any]:
    """Partial-match precision, recall and F1, micro over all types and per type.

    Returns:
        ``{"precision", "recall", "f1", "per_type": {type: {precision, recall, f1, support}}}``.
    """
    counts = {kind: [0, 0, 0, 0] for kind in types}  # hit predicted, predicted, hit gold, gold
    for predicted, gold in zip(predictions, references):
        for entity in predicted:
            row = counts.setdefault(entity["label"], [0, 0, 0, 0])
            row[1] += 1
            row[0] += any(entity["label"] == g["label"] and _overlaps(entity, g) for g in gold)
        for entity in gold:
            row = counts.setdefault(entity["label"], [0, 0, 0, 0])
            row[3] += 1
            row[2] += any(entity["label"] == p["label"] and _overlaps(entity, p) for p in predicted)
    total = [sum(row[i] for row in counts.values()) for i in range(4)]
    return {**{k: v for k, v in _prf(*total).items() if k != "support"},
            "per_type": {kind: _prf(*counts[kind]) for kind in types}}


def error_kinds(predictions: Entities, references: Entities, *, texts: Sequence[str] | None = None,
                examples: int = 0) -> dict[str, Any]:
    """Count (and optionally show) the errors of each kind, in all and per entity type.

    Args:
        predictions / references: per text, the entities (``start``, ``end``, ``label``).
        texts: the texts, for the examples.
        examples: keep up to this many examples of each kind (``{"text", "predicted", "gold"}``).

    Returns:
        ``{"counts": {kind: n}, "per_type": {type: {kind: n}}, "examples": {kind: [...]}}`` (types are the
        predicted entity's, or the gold one's for ``missed``).
    """
    counts = dict.fromkeys(KINDS, 0)
    per_type: dict[str, dict[str, int]] = {}
    shown: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}

    def note(kind: str, label: str, row: int, predicted: Any, gold: Any) -> None:
        counts[kind] += 1
        per_type.setdefault(label, dict.fromkeys(KINDS, 0))[kind] += 1
        if texts is not None and len(shown[kind]) < examples:
            text = texts[row]
            shown[kind].append({"text": text, "predicted": _quote(text, predicted), "gold": _quote(text, gold)})

    for row, (predicted, gold) in enumerate(zip(predictions, references)):
        for entity in predicted:
            if any(_same(entity, g) for g in gold):
                continue
            touching = [g for g in gold if _overlaps(entity, g)]
            same_type = [g for g in touching if g["label"] == entity["label"]]
            kind = "boundary" if same_type else "wrong_type" if touching else "spurious"
            note(kind, entity["label"], row, entity, (same_type or touching or [None])[0])
        for entity in gold:
            if not any(_overlaps(entity, p) for p in predicted):
                note("missed", entity["label"], row, None, entity)
    return {"counts": counts, "per_type": per_type, "examples": shown if examples else {}}


def _quote(text: str, entity: dict[str, Any] | None) -> str | None:
    return None if entity is None else f"{text[int(entity['start']):int(entity['end'])]} ({entity['label']})"


def plot_entity_errors(path: Path, report: dict[str, Any], *, title: str) -> Path:
    """Save a PNG of an :func:`~adapterhub.training.encoder_metrics.entity_report`: exact and overlap F1 per
    type (left) and the error kinds per type (right, stacked); returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    types = list(report["per_type"])
    figure, (scores, errors) = plt.subplots(1, 2, figsize=(4 + 1.6 * len(types), 3.6))
    places = range(len(types))
    for offset, (name, values) in zip((-0.2, 0.2), (("exact F1", report["per_type"]),
                                                    ("overlap F1", report["overlap"]["per_type"]))):
        scores.bar([p + offset for p in places], [values[t]["f1"] for t in types], width=0.4, label=name)
    scores.set_xticks(list(places), types)
    scores.set_ylim(0, 1)
    scores.set_title(f"micro exact {report['f1']:.3f}, overlap {report['overlap']['f1']:.3f}")
    scores.legend(loc="lower right")
    bottom = [0] * len(types)
    for kind in KINDS:
        counts = [report["errors"]["per_type"].get(t, {}).get(kind, 0) for t in types]
        errors.bar(list(places), counts, bottom=bottom, label=kind)
        bottom = [b + c for b, c in zip(bottom, counts)]
    errors.set_xticks(list(places), types)
    errors.set_title("errors (predicted type; missed: gold type)")
    errors.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
