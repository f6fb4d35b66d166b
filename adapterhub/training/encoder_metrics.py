"""Metrics of encoder adapters: a classification report with a confusion matrix, and entity-level NER scores.

``classification_report`` gives per-label precision, recall, F1 and support, their macro and micro
averages, accuracy and the confusion matrix (rows: true label, columns: predicted).
``entity_report`` scores entities as exact character spans with their type — a predicted entity
counts only when start, end and type all match a gold one (seqeval's default entity-level scoring
on the same tags gives the same numbers) — per type, micro-averaged (``precision``/``recall``/``f1``)
and macro-averaged.

>>> report = classification_report(["a", "b", "b"], ["a", "b", "a"], labels=("a", "b"))
>>> report["accuracy"], report["per_label"]["a"]
(0.6667, {'precision': 1.0, 'recall': 0.5, 'f1': 0.6667, 'support': 2})
>>> gold = [[{"start": 0, "end": 6, "label": "ORG"}]]
>>> entity_report([[{"start": 0, "end": 6, "label": "ORG"}, {"start": 7, "end": 9, "label": "ORG"}]], gold,
...               types=("ORG",))["precision"]
0.5
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from .entity_errors import error_kinds, overlap_report


def _prf(true_positive: int, predicted: int, actual: int) -> dict[str, Any]:
    precision = true_positive / predicted if predicted else 0.0
    recall = true_positive / actual if actual else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4), "support": actual}


def _macro(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    count = max(len(rows), 1)
    return {key: round(sum(row[key] for row in rows.values()) / count, 4) for key in ("precision", "recall", "f1")}


def classification_report(predictions: Sequence[str], references: Sequence[str], *,
                          labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, per-label P/R/F1/support, macro and micro averages and the confusion matrix.

    Returns:
        ``{"accuracy", "macro_f1", "micro_f1", "f1": {label: f1}, "per_label": {label: {precision, recall,
        f1, support}}, "macro": {...}, "micro": {...}, "confusion": {"labels": [...], "matrix": [[...]]},
        "count"}`` (``f1`` and ``macro_f1`` as the decoder's label metrics name them).
    """
    per_label = {}
    for label in labels:
        tp = sum(p == label and r == label for p, r in zip(predictions, references))
        per_label[label] = _prf(tp, sum(p == label for p in predictions), sum(r == label for r in references))
    correct = sum(p == r for p, r in zip(predictions, references))
    micro = _prf(correct, len(predictions), len(references))  # single-label: micro P = R = F1 = accuracy
    macro = _macro(per_label)
    position = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for p, r in zip(predictions, references):
        if p in position and r in position:
            matrix[position[r]][position[p]] += 1
    return {"accuracy": round(correct / max(len(references), 1), 4), "macro_f1": macro["f1"], "micro_f1": micro["f1"],
            "f1": {label: row["f1"] for label, row in per_label.items()}, "per_label": per_label, "macro": macro,
            "micro": {k: micro[k] for k in ("precision", "recall", "f1")},
            "confusion": {"labels": list(labels), "matrix": matrix}, "count": len(references)}


def entity_report(predictions: Sequence[Sequence[dict[str, Any]]], references: Sequence[Sequence[dict[str, Any]]], *,
                  types: Sequence[str], texts: Sequence[str] | None = None, examples: int = 0) -> dict[str, Any]:
    """Entity-level exact-span precision, recall and F1, per type and micro/macro-averaged, with overlap
    scores and error kinds (:mod:`~adapterhub.training.entity_errors`).

    Args:
        predictions / references: per text, the entities (``start``, ``end``, ``label``).
        types: the entity types to report (in order).
        texts / examples: keep up to ``examples`` examples of each error kind, quoted from ``texts``.

    Returns:
        ``{"precision", "recall", "f1" (micro), "macro_f1", "per_type": {type: {precision, recall, f1,
        support}}, "macro": {...}, "overlap": {precision, recall, f1, per_type}, "errors": {counts, per_type,
        examples}, "predicted", "support", "count"}``.
    """
    def keyed(entities: Sequence[Sequence[dict[str, Any]]]) -> set[tuple[int, int, int, str]]:
        return {(row, int(e["start"]), int(e["end"]), str(e["label"])) for row, items in enumerate(entities)
                for e in items}

    predicted, gold = keyed(predictions), keyed(references)
    hits = predicted & gold
    per_type = {kind: _prf(sum(1 for e in hits if e[3] == kind), sum(1 for e in predicted if e[3] == kind),
                           sum(1 for e in gold if e[3] == kind)) for kind in types}
    micro = _prf(len(hits), len(predicted), len(gold))
    macro = _macro(per_type)
    return {"precision": micro["precision"], "recall": micro["recall"], "f1": micro["f1"], "macro_f1": macro["f1"],
            "per_type": per_type, "macro": macro, "overlap": overlap_report(predictions, references, types=types),
            "errors": error_kinds(predictions, references, texts=texts, examples=examples),
            "predicted": len(predicted), "support": len(gold), "count": len(references)}


def plot_confusion(path: Path, confusion: dict[str, Any], *, title: str) -> Path:
    """Save a confusion-matrix PNG (rows: true label, columns: predicted) and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, matrix = confusion["labels"], confusion["matrix"]
    size = 1.2 + 0.7 * len(labels)
    figure, axes = plt.subplots(figsize=(size + 1.5, size))
    image = axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    peak = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            axes.text(j, i, str(value), ha="center", va="center", color="white" if value > peak / 2 else "black")
    figure.colorbar(image, ax=axes)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
