"""Fitting a router's head on pooled features and choosing its layer, head and thresholds on validation rows.

Pure tensor math (no registry, no model): :func:`fit_head` fits one head on training features,
:func:`choose` tries every (layer, head) and keeps one by validation figures, then sets the thresholds
from validation rows only (never test rows):

* ``max_distance``: a text is in-domain when its Mahalanobis distance to the nearest adapter's mean (over the
  standardised features, covariance shared by the adapters and shrunk toward its average variance, divided
  by the width) is at most the ``keep`` quantile of the in-domain validation rows' distances (default 99%
  of them pass). Cosine to a prototype separated out-of-domain text far worse on the 135M base (2-38% of our
  out-of-domain validation texts fell under its threshold, against 84-95% for this distance);
* ``min_probability``: a fixed ``0.5`` — the top adapter must be more likely than all others together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

MIN_PROBABILITY = 0.5
TEMPERATURES = (5.0, 10.0, 20.0, 40.0, 80.0)
L2 = 1e-3
SHRINK = 0.1  # covariance shrinkage toward its mean variance (576 widths from ~750 rows need some)
TARGET_ACCURACY = 0.98  # with out-of-domain validation texts: the lowest layer reaching both targets wins
TARGET_OOD = 0.90


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
    tensors = {"mean": mean, "scale": scale, "prototypes": prototypes, **_whitening(train, labels, mean, scale,
                                                                                     classes)}
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


def _whitening(train: Any, labels: Any, mean: Any, scale: Any, classes: int) -> dict[str, Any]:
    """``whiten`` ``[hidden, hidden]`` (fp16: 0.66 MB at 576 wide) with ``whiten.T @ whiten`` the shrunk inverse
    covariance of the standardised features around their adapter's mean, and ``centres`` ``[adapters, hidden]``
    the adapters' means already whitened, so ``distance = |whiten @ z - centre|^2 / hidden``."""
    import torch

    standard = ((train.float() - mean) / scale).double()
    means = torch.stack([standard[labels == c].mean(0) for c in range(classes)])
    residual = standard - means[labels]
    covariance = residual.T @ residual / max(1, len(residual) - classes)
    width = covariance.shape[0]
    covariance = (1 - SHRINK) * covariance + SHRINK * covariance.trace() / width * torch.eye(width, dtype=torch.double)
    values, vectors = torch.linalg.eigh(covariance)
    whiten = (vectors / values.clamp_min(1e-12).sqrt()).T  # rows: principal directions scaled to unit variance
    whiten16 = whiten.to(torch.float16)
    return {"whiten": whiten16, "centres": (means @ whiten16.double().T).float()}


def distances(features: Any, tensors: Any) -> Any:
    """``[rows, adapters]`` squared Mahalanobis distance per width of each row to each adapter's mean."""
    import torch

    standard = (features.float() - tensors["mean"].float()) / tensors["scale"].float()
    whitened = standard @ tensors["whiten"].float().T
    return torch.cdist(whitened, tensors["centres"].float()).square() / whitened.shape[-1]


def choose(train: dict[int, Any], labels: Any, validation: dict[int, Any], validation_labels: Any, *, classes: int,
           heads: Sequence[str] = ("prototype", "linear"), keep: float = 0.99,
           outside: dict[int, Any] | None = None) -> tuple[FittedHead, list[dict[str, Any]]]:
    """Fit every (layer, head), set its thresholds on the validation rows, and keep one.

    Without ``outside`` texts: the best validation accuracy (ties: the lower layer, then the first head).
    With them: the lowest layer (the cheapest routing pass) whose routed accuracy (right adapter and above the
    thresholds) is at least 98% and that sends at least 90% of ``outside`` to the fallback; if none reaches
    both, the highest sum of the two.

    Args:
        train / validation: ``{layer: [rows, hidden]}`` features.
        keep: share of in-domain validation rows that must pass ``max_distance``.
        outside: ``{layer: [rows, hidden]}`` features of out-of-domain validation texts (never fitted).

    Returns:
        ``(the chosen head, one row per candidate: layer, head, validation accuracy, routed accuracy, ood share)``.
    """
    table, fitted_all = [], []
    for layer in sorted(train):
        for head in heads:
            fitted = fit_head(train[layer], labels, head=head, classes=classes, validation=validation[layer],
                              validation_labels=validation_labels, layer=layer)
            _thresholds(fitted, validation[layer], keep=keep)
            row = {"layer": layer, "head": head, "validation_accuracy": round(fitted.validation_accuracy, 4),
                   "routed_accuracy": round(_routed(fitted, validation[layer], validation_labels), 4)}
            if outside is not None and len(outside[layer]):
                row["ood_fallback"] = round(_below(fitted, outside[layer]), 4)
            table.append(row)
            fitted.scores = row
            fitted_all.append(fitted)
    if outside is None:
        best = max(fitted_all, key=lambda f: (f.validation_accuracy, -f.layer, -heads.index(f.head)))
    else:
        good = [f for f in fitted_all if f.scores["routed_accuracy"] >= TARGET_ACCURACY
                and f.scores.get("ood_fallback", 0.0) >= TARGET_OOD]
        best = (min(good, key=lambda f: (f.layer, -f.validation_accuracy)) if good else
                max(fitted_all, key=lambda f: (f.scores["routed_accuracy"] + f.scores.get("ood_fallback", 0.0),
                                               -f.layer)))
    return best, table


def _logits(fitted: FittedHead, features: Any) -> Any:
    t = fitted.tensors
    unit = _unit(features, t["mean"], t["scale"])
    if fitted.head == "linear":
        return unit @ t["weight"].T + t["bias"]
    return unit @ t["prototypes"].T * fitted.config["temperature"]


def _thresholds(fitted: FittedHead, validation: Any, *, keep: float) -> None:
    import torch

    nearest = distances(validation, fitted.tensors).min(-1).values
    fitted.config["max_distance"] = round(float(torch.quantile(nearest, keep)) if len(nearest) else 1e9, 6)
    fitted.config["min_probability"] = MIN_PROBABILITY


def _passes(fitted: FittedHead, features: Any) -> Any:
    """Per row: whether it clears both thresholds (and so goes to its top adapter)."""
    probabilities = _logits(fitted, features).softmax(-1).max(-1).values
    nearest = distances(features, fitted.tensors).min(-1).values
    return (nearest <= fitted.config["max_distance"]) & (probabilities >= fitted.config["min_probability"])


def _routed(fitted: FittedHead, features: Any, labels: Any) -> float:
    """Share of labelled rows sent to their own adapter (a fallback is a miss)."""
    if not len(labels):
        return 0.0
    right = _logits(fitted, features).argmax(-1) == labels
    return float((right & _passes(fitted, features)).float().mean())


def _below(fitted: FittedHead, features: Any) -> float:
    """Share of rows that do not clear the thresholds (what the fallback would take)."""
    return float((~_passes(fitted, features)).float().mean())
