"""Bounded ``adapter`` label values for /metrics: the top-K adapters by traffic keep their own series, every other
adapter shares ``other``, every weighted mix is ``mix``.

An adapter enters the top K while a place is free, or when its traffic grows past twice that of the least-used
labelled adapter, which then leaves (its series are removed; later traffic counts as ``other``). So the series
never number more than ``K + 3`` per metric (``base``, ``mix``, ``other``, and ``-`` for requests that resolved
no adapter), whatever the spellings or the number of adapters.

>>> top = TopAdapters(2)
>>> [top.label(name) for name in ("legal", "finance", "medical", "legal:0.5+finance:0.5", "base")]
['legal', 'finance', 'other', 'mix', 'base']
"""

from __future__ import annotations

import threading
from typing import Callable

FIXED = frozenset({"base", "mix", "other", "-"})
DEFAULT_TOP_K = 20
_COUNTED = 10_000  # adapters whose traffic is remembered (the least counted are forgotten past this)


class TopAdapters:
    """Which adapters get their own label (``k`` at most); ``on_demote(name)`` drops a demoted adapter's series."""

    def __init__(self, k: int = DEFAULT_TOP_K, *, on_demote: Callable[[str], None] | None = None) -> None:
        if k < 0:
            raise ValueError(f"metrics top-K must be >= 0, got {k}")
        self.k = k
        self._on_demote = on_demote or (lambda name: None)
        self._traffic: dict[str, int] = {}
        self._labelled: set[str] = set()
        self._lock = threading.Lock()

    def label(self, adapter: str, *, count: bool = True) -> str:
        """The label value for ``adapter`` (one request's worth of traffic counted unless ``count`` is False)."""
        if adapter in FIXED:
            return adapter
        if "+" in adapter or ":" in adapter.replace("hf://", "", 1):
            return "mix"
        with self._lock:
            seen = self._traffic.get(adapter, 0) + (1 if count else 0)
            self._traffic[adapter] = seen
            if len(self._traffic) > _COUNTED:
                self._forget()
            if adapter in self._labelled:
                return adapter
            if len(self._labelled) < self.k:
                self._labelled.add(adapter)
                return adapter
            if not self._labelled:
                return "other"
            weakest = min(self._labelled, key=lambda name: self._traffic.get(name, 0))
            if seen <= 2 * self._traffic.get(weakest, 0):
                return "other"
            self._labelled.discard(weakest)
            self._labelled.add(adapter)
        self._on_demote(weakest)
        return adapter

    def labelled(self) -> set[str]:
        with self._lock:
            return set(self._labelled)

    def _forget(self) -> None:
        """Halve the remembered traffic and drop adapters left at zero (bounded memory, recent traffic weighs more)."""
        self._traffic = {name: seen // 2 for name, seen in self._traffic.items()
                         if seen // 2 or name in self._labelled}
