"""One number per registered version for listings: its headline metric, read from the manifest's metrics.

Accuracy on validation (else test) for classifiers, entity F1 for NER, loss for generation adapters;
imported adapters without metrics have none.

>>> headline_metric({"validation": {"accuracy": 0.96875, "loss": 0.1}, "test": {"accuracy": 0.9375}})
'val acc 96.9%'
>>> headline_metric({"test": {"f1": 0.912, "precision": 0.9}}), headline_metric({}) is None
('test F1 0.912', True)
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

_SHORT = {"validation": "val", "test": "test"}
_FORMATS = {"accuracy": "{split} acc {value:.1%}", "f1": "{split} F1 {value:.3f}", "loss": "{split} loss {value:.3f}"}


def headline(metrics: Mapping[str, Any] | None, *, splits: Sequence[str] = ("validation", "test"),
             names: Sequence[str] = ("accuracy", "f1", "loss")) -> tuple[str, str, float] | None:
    """``(split, metric, value)``: the first of ``names`` held by the first of ``splits`` that holds one, or ``None``.

    >>> headline({"validation": {"loss": 0.2}, "test": {"accuracy": 0.9}}, splits=("test", "validation"))
    ('test', 'accuracy', 0.9)
    """
    for split in splits:
        values = (metrics or {}).get(split)
        if not isinstance(values, Mapping):
            continue
        for name in names:
            if isinstance(values.get(name), (int, float)):
                return split, name, values[name]
    return None


def headline_metric(metrics: Mapping[str, Any] | None) -> str | None:
    """``"val acc 96.9%"``, ``"test F1 0.912"``, ``"val loss 1.234"``, or ``None`` when nothing was measured."""
    found = headline(metrics, names=tuple(_FORMATS))
    if found is None:
        return None
    split, name, value = found
    return _FORMATS[name].format(split=_SHORT[split], value=value)
