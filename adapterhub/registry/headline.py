"""One number per registered version for listings: its headline metric, read from the manifest's metrics.

Accuracy on validation (else test) for classifiers, entity F1 for NER, loss for generation adapters;
imported adapters without metrics have none.

>>> headline_metric({"validation": {"accuracy": 0.96875, "loss": 0.1}, "test": {"accuracy": 0.9375}})
'val acc 96.9%'
>>> headline_metric({"test": {"f1": 0.912, "precision": 0.9}}), headline_metric({}) is None
('test F1 0.912', True)
"""

from __future__ import annotations

from typing import Any, Mapping

_SHORT = {"validation": "val", "test": "test"}


def headline_metric(metrics: Mapping[str, Any] | None) -> str | None:
    """``"val acc 96.9%"``, ``"test F1 0.912"``, ``"val loss 1.234"``, or ``None`` when nothing was measured."""
    for split in ("validation", "test"):
        values = (metrics or {}).get(split)
        if not isinstance(values, Mapping):
            continue
        if isinstance(values.get("accuracy"), (int, float)):
            return f"{_SHORT[split]} acc {values['accuracy']:.1%}"
        if isinstance(values.get("f1"), (int, float)):
            return f"{_SHORT[split]} F1 {values['f1']:.3f}"
        if isinstance(values.get("loss"), (int, float)):
            return f"{_SHORT[split]} loss {values['loss']:.3f}"
    return None
