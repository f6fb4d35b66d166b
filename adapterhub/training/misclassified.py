"""The rows a classifier gets wrong, with each label's probability: ``adapterhub evaluate --errors``.

Both kinds of classifier give a score per (row, label) — the decoder the summed log-likelihood of each
label, the encoder its head's logits — and a softmax over a row's scores is the share of probability each
label holds (what ``hub.label_scores(..., normalize=True)`` and ``hub.classify`` report).

>>> import torch
>>> rows = [{"text": "card declined", "label": "billing"}, {"text": "app crashes", "label": "bug"}]
>>> wrong = misclassified(rows, torch.tensor([[2.0, 0.0], [3.0, 0.0]]), ("billing", "bug"))
>>> [(w["row"], w["label"], w["predicted"]) for w in wrong]
[(2, 'bug', 'billing')]
"""

from __future__ import annotations

from typing import Any, Sequence


def misclassified(rows: Sequence[dict[str, Any]], scores: Any, labels: Sequence[str]) -> list[dict[str, Any]]:
    """Every row whose best-scoring label is not its own, most confident mistakes first.

    Args:
        rows: the split's rows (``text`` and ``label``), in the order of ``scores``.
        scores: ``[rows, labels]`` scores (log-likelihoods or logits).
        labels: the label of each score column.

    Returns:
        ``[{"row": 1-based line, "text", "label", "predicted", "probabilities": {label: p}}]``.
    """
    import torch

    probabilities = torch.softmax(torch.as_tensor(scores, dtype=torch.float32), dim=-1)
    wrong = []
    for index, (row, shares) in enumerate(zip(rows, probabilities)):
        predicted = labels[int(shares.argmax())]
        if predicted != str(row["label"]):
            wrong.append({"row": index + 1, "text": str(row["text"]), "label": str(row["label"]),
                          "predicted": predicted,
                          "probabilities": {label: round(float(p), 4) for label, p in zip(labels, shares)}})
    return sorted(wrong, key=lambda item: -item["probabilities"][item["predicted"]])
