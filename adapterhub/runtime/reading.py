"""Below the slots: where one residency's adapters are read from, and which version each name means.

An :class:`AdapterReader` turns a reference into ``(name, source)`` (the registry, a folder, or the
source a name was last loaded from, so an evicted adapter reloads the same version) and a source
into an adapter prepared for a slot, through the host tier (:mod:`~adapterhub.runtime.host_tier`) before
the disk. It holds no lock of the residency's: reads and preparing run while other rows decode.

>>> reader = AdapterReader(base, registry=None, host_budget_mb=256, prepare=prepare)  # doctest: +SKIP
>>> reader.fetch(*reader.identify("legal@2", name=None)[::-1][:1], name="legal").origin  # doctest: +SKIP
'disk'
"""

from __future__ import annotations

import os
from typing import Any, Callable

from . import sources
from .batch import UNSET
from .host_tier import HostTier, TierCounters
from .slots import ResidentInfo, budget_bytes
from .staging import StagedAdapter


class AdapterReader:
    """The remembered source of each name, the host tier, and the registry and folders under them.

    Args:
        base: the loaded base every adapter is checked against.
        registry: a Registry, a registry root, or ``None`` for the default (opened on first use).
        host_budget_mb: the host tier's budget (``None`` or ``0``: no host tier).
        prepare: a checked payload -> what a slot receives (:func:`~adapterhub.runtime.staging.stage`).
    """

    def __init__(self, base: Any, *, prepare: Callable[[sources.AdapterPayload], StagedAdapter], registry: Any = None,
                 host_budget_mb: float | None = None) -> None:
        self.base = base
        self.counters = TierCounters()  # loads, evictions, hits and load latency per tier (read for metrics)
        self.host = HostTier(budget_bytes(host_budget_mb) or 0, device=next(base.model.parameters()).device,
                             prepare=prepare, counters=self.counters)
        self._registry_arg = registry
        self._registry: Any = UNSET
        self._sources: dict[str, str] = {}  # name -> source, kept after eviction so it reloads on next use

    @property
    def registry(self) -> Any:
        """The :class:`~adapterhub.registry.Registry` names and references resolve in (opened on first use)."""
        if self._registry is UNSET:
            self._registry = sources.open_registry(self._registry_arg)
        return self._registry

    def registry_for(self, ref: str | os.PathLike) -> Any:
        """The registry, opened only when ``ref`` is a registry reference."""
        return None if sources.is_path(ref) else self.registry

    def identify(self, ref: str | os.PathLike, *, name: str | None) -> tuple[str, str]:
        """``(name, source)`` of ``ref`` (see :func:`~adapterhub.runtime.sources.identify`)."""
        return sources.identify(ref, registry=self.registry_for(ref), name=name)

    def target(self, ref: str, *, exact: bool) -> tuple[str, str]:
        """``(name, source)`` a pin of ``ref`` loads: an exact versioned ref under its own spelling, a name
        loaded before from the source it came from, else what the registry (or folder) says.

        Raises:
            AdapterNotFoundError, InvalidNameError: as :func:`~adapterhub.runtime.sources.identify`.
        """
        if exact and is_versioned(ref):
            return self.identify(ref, name=ref)
        known = self._sources.get(ref)
        return (ref, known) if known is not None else self.identify(ref, name=None)

    def known(self, name: str) -> str | None:
        """The source ``name`` was last loaded from (``None``: never, or forgotten)."""
        return self._sources.get(name)

    def remember(self, name: str, source: str) -> None:
        self._sources[name] = source

    def forget(self, name: str | None = None) -> None:
        """Forget ``name``'s source and drop its host copy (``None``: every name and the whole host tier)."""
        if name is None:
            self._sources.clear()
            self.host.clear()
            return
        source = self._sources.pop(name, None)
        if source is not None:
            self.host.discard(source)

    def fetch(self, source: str, *, name: str) -> StagedAdapter:
        """The adapter at ``source`` named ``name``, prepared for a slot: from the host tier when it holds it,
        else read from disk (once, however many calls ask at the same time) and kept there."""
        return self.host.fetch(source, name=name, read=lambda: sources.fetch(
            source, registry=self.registry_for(source), base=self.base, name=name))

    def held(self) -> list[ResidentInfo]:
        """The host tier's adapters (``tier="host"``), most recently used first."""
        return self.host.info()


def is_versioned(ref: str) -> bool:
    """Whether ``ref`` names one version (``legal@2``, ``hf://...``) rather than a name's latest."""
    return "@" in ref or ref.startswith("hf://")
