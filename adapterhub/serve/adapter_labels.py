"""Bounded ``adapter`` labels for ``/metrics``: the top-K adapters by traffic get their own series, the rest
share ``other``, so a server with a thousand adapters exports at most K + 4 values of the label (K adapters,
``other``, ``mix`` for every weighted mix, ``base`` for the bare base and ``-`` for requests that never resolved
one).

Traffic is counted per request. While fewer than K adapters hold a label, the next one seen takes one. After
that an unlabelled adapter takes the label of the least-used labelled one once its count passes twice that
one's (the factor keeps near-equal adapters, as under uniform traffic, from trading places on every request).
The demoted adapter's series are removed (a counter's count moves to ``other``, so totals stay whole; its
latency histograms' observations are dropped) and its later traffic counts under ``other``; the promoted
one's series start at zero (its earlier traffic stays in ``other``). Every exported series thus only grows,
and the label set stays bounded. Counts are halved when more than ``max_tracked`` names are tallied, so memory stays
bounded too and old traffic weighs less than new.

>>> labels = AdapterLabels(top_k=1)
>>> labels.label("legal"), labels.label("finance"), labels.label("base")
('legal', 'other', 'base')
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterable

from ..errors import ConfigError

OTHER = "other"
MIX = "mix"  # every weighted mix ("legal:0.7+finance:0.3"): one value however many spellings (issue 32)
SPECIAL = frozenset({"base", "-", OTHER, MIX})  # never counted against K


def _mixed(name: str) -> bool:
    return "+" in name or ":" in name.replace("hf://", "", 1)
PROMOTE_FACTOR = 2


class AdapterLabels:
    """Which adapters carry their own ``adapter`` label (at most ``top_k``), by traffic.

    Args:
        top_k: adapters with their own series (``0``: every adapter counts under ``other``).
        on_demote: called with an adapter's name when it loses its label (its series should be removed).
        max_tracked: most names tallied before every count is halved (and zeros dropped).

    Raises:
        ConfigError: ``top_k`` below 0.
    """

    def __init__(self, top_k: int = 32, *, on_demote: Callable[[str], None] | None = None,
                 max_tracked: int | None = None) -> None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            raise ConfigError(f"metrics top_k={top_k!r} must be a whole number >= 0 (adapters with their own "
                              "series on /metrics; the rest count under 'other')")
        self.top_k = top_k
        self.max_tracked = max_tracked or max(4096, 16 * top_k)
        self._on_demote = on_demote
        self._labelled: set[str] = set()
        self._tally: dict[str, int] = {}
        self._lock = threading.Lock()

    def label(self, name: str) -> str:
        """The ``adapter`` label value for ``name`` now (it takes a free label; it does not count traffic)."""
        if name in SPECIAL or _mixed(name):
            return MIX if _mixed(name) else name
        with self._lock:
            if name not in self._labelled and len(self._labelled) < self.top_k:
                self._labelled.add(name)
            return name if name in self._labelled else OTHER

    def count(self, name: str) -> str:
        """Count one request of ``name`` (promoting it past the least-used labelled adapter when it has
        overtaken it twice over) and return its label value."""
        if name in SPECIAL or _mixed(name):
            return MIX if _mixed(name) else name
        demoted = None
        with self._lock:
            if len(self._tally) >= self.max_tracked:
                self._decay()
            self._tally[name] = self._tally.get(name, 0) + 1
            if name not in self._labelled and self.top_k:
                if len(self._labelled) < self.top_k:
                    self._labelled.add(name)
                else:
                    weakest = min(self._labelled, key=lambda label: self._tally.get(label, 0))
                    if self._tally[name] > PROMOTE_FACTOR * self._tally.get(weakest, 0):
                        self._labelled.discard(weakest)
                        self._labelled.add(name)
                        demoted = weakest
            value = name if name in self._labelled else OTHER
        if demoted is not None and self._on_demote is not None:
            self._on_demote(demoted)
        return value

    def labelled(self) -> set[str]:
        """The adapters with their own series now."""
        with self._lock:
            return set(self._labelled)

    def _decay(self) -> None:
        """Halve every tally; drop the unlabelled ones that reach zero (labelled ones keep at least 1)."""
        self._tally = {name: max(count // 2, name in self._labelled) for name, count in self._tally.items()
                       if count // 2 or name in self._labelled}


def remove_series(metrics: Iterable[tuple[Any, tuple[str, ...]]], adapter: str) -> None:
    """Remove every child of each ``(metric, label names)`` whose ``adapter`` label is ``adapter``; a counter's
    count moves to the same series under ``other`` (totals stay whole), a histogram's observations are dropped."""
    for metric, names in metrics:
        children: dict[tuple[str, ...], float] = {}
        for family in metric.collect():
            for sample in family.samples:
                if sample.labels.get("adapter") == adapter:
                    values = tuple(sample.labels[n] for n in names)
                    counted = family.type == "counter" and sample.name.endswith("_total")
                    children[values] = children.get(values, 0.0) + (sample.value if counted else 0.0)
        for values, count in children.items():
            try:
                metric.remove(*values)
            except KeyError:  # removed meanwhile by another thread
                continue
            if count:
                metric.labels(*(OTHER if n == "adapter" else v for n, v in zip(names, values))).inc(count)
