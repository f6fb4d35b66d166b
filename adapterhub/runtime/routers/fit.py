"""Fitting a router's head on pooled features and choosing its layer, head and thresholds on validation rows.

Pure tensor math (no registry, no model): :func:`fit_head` fits one head on training features,
:func:`choose` tries every (layer, head) and keeps the best on validation, then sets the thresholds
from validation rows only (never test rows):

* ``min_similarity``: the ``1 - keep`` quantile of the in-domain validation rows' cosine to their chosen
  prototype, so ``keep`` of them (default 99%) pass; out-of-domain text lands below it;
* ``min_probability``: a fixed ``0.5`` — the top adapter must be more likely than all others together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

MIN_PROBABILITY = 0.5
TEMPERATURES = (5.0, 10.0, 20.0, 40.0, 80.0)
L2 = 1e-3


@dataclass
class FittedHead:
    """One fitted head: its tensors, config fields and validation figures."""

    layer: int
    head: str
    tensors: dict[str, Any]
    config: dict[str, Any]
    validation_accuracy: float = 0.0
    scores: dict[str, Any] = field(default_factory=dict)


def _unit(features: Any, mean: Any, scale: Any) -> Any:
    import torch

    return torch.nn.functional.normalize((features.float() - mean) / scale, dim=-1)


def fit_head(train: Any, labels: Any, *, head: str, classes: int, validation: Any, validation_labels: Any,
             layer: int) -> FittedHead:
    """Fit ``head`` ("prototype" or "linear") on ``train`` ``[rows, hidden]`` with integer ``labels``."""
    import torch

    mean, scale = train.float().mean(0), train.float().std(0) + 1e-6
    unit, unit_val = _unit(train, mean, scale), _unit(validation, mean, scale)
    prototypes = torch.nn.functional.normalize(torch.stack([unit[labels == c].mean(0) for c in range(classes)]), dim=-1)
    tensors = {"mean": mean, "scale": scale, "prototypes": prototypes}
    config: dict[str, Any] = {"head": head, "layer": layer}
    if head == "prototype":
        cos_val = unit_val @ prototypes.T
        nll = {t: float(torch.nn.functional.cross_entropy(cos_val * t, validation_labels)) for t in TEMPERATURES}
        config["temperature"] = min(nll, key=nll.get)
        logits = cos_val * config["temperature"]
    else:
        torch.manual_seed(0)
        weight = torch.zeros(classes, unit.shape[1], requires_grad=True)
        bias = torch.zeros(classes, requires_grad=True)
        optimiser = torch.optim.LBFGS([weight, bias], max_iter=200, line_search_fn="strong_wolfe")

        def closure() -> Any:
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(unit @ weight.T + bias, labels) + L2 * (weight ** 2).sum()
            loss.backward()
            return loss

        optimiser.step(closure)
        tensors |= {"weight": weight.detach().clone(), "bias": bias.detach().clone()}
        logits = unit_val @ tensors["weight"].T + tensors["bias"]
    accuracy = float((logits.argmax(-1) == validation_labels).float().mean()) if len(validation_labels) else 0.0
    return FittedHead(layer=layer, head=head, tensors=tensors, config=config, validation_accuracy=accuracy)


def choose(train: dict[int, Any], labels: Any, validation: dict[int, Any], validation_labels: Any, *, classes: int,
           heads: Sequence[str] = ("prototype", "linear"), keep: float = 0.99,
           outside: dict[int, Any] | None = None) -> tuple[FittedHead, list[dict[str, Any]]]:
    """Fit every (layer, head), keep the best validation accuracy (ties: the lower layer, then prototype),
    and set its thresholds on the validation rows.

    Args:
        train / validation: ``{layer: [rows, hidden]}`` features.
        keep: share of in-domain validation rows that must pass ``min_similarity``.
        outside: ``{layer: [rows, hidden]}`` features of out-of-domain validation texts (reported per
            candidate as the share they would send to the fallback; never used to fit).

    Returns:
        ``(the chosen head, one row per candidate: layer, head, validation accuracy, ood fallback share)``.
    """
    table = []
    best: FittedHead | None = None
    for layer in sorted(train):
        for head in heads:
            fitted = fit_head(train[layer], labels, head=head, classes=classes, validation=validation[layer],
                              validation_labels=validation_labels, layer=layer)
            _thresholds(fitted, validation[layer], keep=keep)
            row = {"layer": layer, "head": head, "validation_accuracy": round(fitted.validation_accuracy, 4)}
            if outside is not None and len(outside[layer]):
                row["ood_fallback"] = round(_below(fitted, outside[layer]), 4)
            table.append(row)
            fitted.scores = row
            if best is None or fitted.validation_accuracy > best.validation_accuracy + 1e-9:
                best = fitted
    assert best is not None
    return best, table


def _thresholds(fitted: FittedHead, validation: Any, *, keep: float) -> None:
    import torch

    unit = _unit(validation, fitted.tensors["mean"], fitted.tensors["scale"])
    top = (unit @ fitted.tensors["prototypes"].T).max(-1).values
    fitted.config["min_similarity"] = round(float(torch.quantile(top, 1 - keep)) if len(top) else -1.0, 6)
    fitted.config["min_probability"] = MIN_PROBABILITY


def _below(fitted: FittedHead, features: Any) -> float:
    """Share of rows whose top cosine falls under ``min_similarity`` (what the fallback would take)."""
    unit = _unit(features, fitted.tensors["mean"], fitted.tensors["scale"])
    top = (unit @ fitted.tensors["prototypes"].T).max(-1).values
    return float((top < fitted.config["min_similarity"]).float().mean())
