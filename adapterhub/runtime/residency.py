"""Residency: which adapters are loaded on one base, and the pins that keep them there while rows use them.

One :class:`Residency` per hub owns everything about loaded adapters: the lock and the condition
that waiting loads sleep on, the slot table (the device tier: LRU order, ``max_resident``, the byte
budget), every method's slot storage and the encoder heads. Below the slots, its
:class:`~adapterhub.runtime.reading.AdapterReader` holds the host tier and where each name came from.
A non-resident adapter is read and checked *outside* the lock (rows of others keep decoding); only
the copy into its slot holds it. A call pins what its rows use and unpins when it returns; every
unpin wakes the loads waiting for a slot, whichever door the pin came through.

>>> residency = hub.residency                            # doctest: +SKIP
>>> entry = residency.pin("legal")                      # doctest: +SKIP
>>> residency.routing([entry, None]).layers.slots       # doctest: +SKIP
(7, -1)
>>> residency.unpin(entry)                              # doctest: +SKIP
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from contextlib import ExitStack, contextmanager
from functools import partial
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence, Union

from ..errors import AdapterInUseError, AdapterNotFoundError, ConfigError, InvalidNameError
from . import mixing, sources
from .batch import BARE, RowRouting, RowSlots
from .heads import HeadBank
from .host_tier import TierCounters
from .methods import AdapterMethod, build_methods, route
from .mixing import Mix, MixLease, MixRow, RowDomain
from .reading import AdapterReader, is_versioned
from .slots import ResidentAdapter, ResidentInfo, check_limits
from .staging import StagedAdapter, stage

if TYPE_CHECKING:
    from ..base.loading import Base

Held = Union[ResidentAdapter, MixLease]
"""A pin a caller holds until it passes it to :meth:`Residency.unpin`."""

Routed = Union[ResidentAdapter, MixRow, None]
"""One row as routing sees it: anything with a ``method`` and a ``slot`` (``None``: the bare base)."""


class Residency:
    """The adapters resident on one base: loading, LRU eviction under limits, and pins.

    Args:
        base: the loaded :class:`~adapterhub.base.Base` the adapters run on.
        registry: a :class:`~adapterhub.registry.Registry`, a registry root path, or ``None`` for the
            default registry (opened on first use of a registry reference).
        max_resident: most adapters kept loaded; the least recently used unpinned one is evicted.
        memory_budget_mb: most MiB of adapter weights kept loaded.
        host_budget_mb: most MiB of read, checked adapters kept in host RAM (the host tier, see
            :mod:`~adapterhub.runtime.host_tier`): a device load found there is a copy, not a disk read
            (``None`` or ``0``: no host tier).
        slot_wait_s: how long a load waits for running calls to free a slot before
            :class:`~adapterhub.errors.MemoryBudgetError`.

    Raises:
        ConfigError: bad limits (see :func:`~adapterhub.runtime.slots.check_limits`).

    >>> residency = Residency(base, max_resident=4)  # doctest: +SKIP
    >>> residency.load("legal@2").source             # doctest: +SKIP
    'legal@2'
    """

    def __init__(self, base: Base, *, registry: Any = None, max_resident: int | None = None,
                 memory_budget_mb: float | None = None, host_budget_mb: float | None = None,
                 slot_wait_s: float = 30.0) -> None:
        self.base = base
        self._table = check_limits(max_resident=max_resident, memory_budget_mb=memory_budget_mb,
                                   slot_wait_s=slot_wait_s, host_budget_mb=host_budget_mb)
        self._slot_wait_s = float(slot_wait_s)
        self._methods = build_methods(base)
        self._heads = HeadBank()  # encoder adapters' task heads, by slot
        self._lock = threading.RLock()
        self._slot_freed = threading.Condition(self._lock)  # notified whenever a pin is released or a slot freed
        self._device = next(base.model.parameters()).device
        self._reader = AdapterReader(base, registry=registry, host_budget_mb=host_budget_mb,
                                     prepare=partial(stage, methods=self._methods, base=base))
        weakref.finalize(self, self._table.release_all, self._methods)

    # --- what it serves on ------------------------------------------------------------
    @property
    def device(self) -> Any:
        """The ``torch.device`` the base (and every adapter's slot storage) lives on."""
        return self._device

    @property
    def methods(self) -> Mapping[str, AdapterMethod]:
        """Every served method's instance on this base, by name (read-only view)."""
        return MappingProxyType(self._methods)

    @property
    def registry(self) -> Any:
        """The :class:`~adapterhub.registry.Registry` names and references resolve in (opened on first use)."""
        return self._reader.registry

    @property
    def counters(self) -> TierCounters:
        """Loads, evictions, hits and misses per tier, and load latencies (what ``/metrics`` reports)."""
        return self._reader.counters

    # --- loading and unloading ------------------------------------------------------------
    def load(self, ref_or_path: str | os.PathLike, *, name: str | None = None) -> ResidentInfo:
        """Make an adapter resident (idempotent) and report it: what :meth:`AdapterHub.load` does.

        Raises:
            AdapterNotFoundError, IncompatibleBaseError, InvalidAdapterError: as :meth:`AdapterHub.load`.
            MemoryBudgetError: it does not fit the limits, or running calls held the slots for ``slot_wait_s``.
            AdapterInUseError: another version under ``name`` is in use by a running call.

        >>> residency.load("/adapters/finance-r16", name="finance").method  # doctest: +SKIP
        'lora'
        """
        name, source = self._reader.identify(ref_or_path, name=name)
        with self._lock:
            entry = self._table.get(name)
        staged = None if entry is not None and entry.source == source else self._reader.fetch(source, name=name)
        with self._lock:
            entry = (self._installed(staged, protect=frozenset()) if staged is not None else
                     self._load(ref_or_path, name=name, protect=frozenset()))
            return next(info for info in self._table.report() if info.name == entry.name)

    def unload(self, name: str) -> bool:
        """Free ``name``'s slot and forget its source; returns whether it was resident.

        Raises:
            AdapterInUseError: a running call pins it.
        """
        with self._lock:
            entry = self._table.get(name)
            if entry is not None and entry.pins:
                raise AdapterInUseError(f"adapter {name!r} is in use by a running call; unload it after the call "
                                        "returns")
            self._reader.forget(name)
            if entry is None:
                return False
            self._evict(entry)
            return True

    def close(self) -> None:
        """Unload every adapter and forget every source (the base stays loaded and unchanged)."""
        with self._lock:
            for entry in self._table.entries():
                self._evict(entry)
            self._reader.forget()

    def report(self, *, tier: str = "device") -> list[ResidentInfo]:
        """Resident adapters (name, tier, method, bytes, pins, hits, last use, ...), most recently used first.

        Args:
            tier: ``"device"`` (the slots calls use), ``"host"`` (the host tier) or ``"all"`` (device first).
        """
        if tier not in ("device", "host", "all"):
            raise ConfigError(f"tier={tier!r} must be 'device', 'host' or 'all'")
        with self._lock:
            device = self._table.report() if tier != "host" else []
        return device + (self._reader.held() if tier != "device" else [])

    def usage(self) -> dict[str, dict[str, int | None]]:
        """Per tier (``device``, ``host``): ``adapters`` held, their ``bytes``, ``budget_bytes`` and ``max_resident``."""
        with self._lock:
            return {"device": self._table.usage(), "host": self._reader.host.usage()}

    def get(self, name: str) -> ResidentAdapter | None:
        """The resident entry called ``name`` (unpinned: read its ``slot`` or ``task``, do not keep it), or ``None``."""
        with self._lock:
            return self._table.get(name)

    def resolve(self, name: str) -> ResidentAdapter:
        """The entry ``name`` calls would use, loading it first when it is registered but not resident.

        Raises:
            UnknownDomainError: ``name`` is neither resident, known from an earlier load, nor registered.
            (and what :meth:`load` raises)
        """
        with self._lock:
            return self._resolve(name, protect=frozenset())

    # --- pins ---------------------------------------------------------------------------
    def pin(self, ref: str, *, exact: bool = False) -> ResidentAdapter:
        """Resolve ``ref`` (loading it if needed) and pin it: it stays resident until :meth:`unpin`.

        Args:
            ref: a resident name or a registry reference.
            exact: keep a versioned (``legal@2``) or ``hf://`` reference resident under that exact
                string, so it never displaces another version a running row uses (what a server does);
                otherwise it loads under its registry name, like :meth:`load`.

        Raises:
            UnknownDomainError: and what :meth:`load` raises.

        >>> entry = residency.pin("legal@2", exact=True)  # doctest: +SKIP
        >>> residency.unpin(entry)                         # doctest: +SKIP
        """
        staged = self._staged([ref], exact=exact)
        with self._lock:
            return self._pin_all([ref], exact=exact, staged=staged)[0]

    def pin_mix(self, mix: Mix, *, exact: bool = False) -> MixLease:
        """Pin every adapter of a weighted mix and give the mix a virtual slot in their layers until :meth:`unpin`.

        Raises:
            ConfigError: an adapter that cannot mix (see :func:`~adapterhub.runtime.mixing.check_mixable`);
            and what :meth:`pin` raises.

        >>> lease = residency.pin_mix(mixing.parse_mix("finance:0.7+legal:0.3"))  # doctest: +SKIP
        >>> residency.unpin(lease)                                                # doctest: +SKIP
        """
        names = [name for name, _ in mix.parts]
        staged = self._staged(names, exact=exact)
        with self._lock:
            parts = self._pin_all(names, exact=exact, staged=staged)
            mixes, installed = self._mix_slots([mix], dict(zip(names, parts)), pinned=parts)
            return MixLease.holding(mixes[mix], installed)

    def unpin(self, held: Held | None) -> None:
        """Release a pin from :meth:`pin` or :meth:`pin_mix` (``None`` is a no-op) and wake waiting loads."""
        if held is None:
            return
        with self._lock:
            if isinstance(held, MixLease):
                held.installed.close()
                self._release([entry for entry, _ in held.parts])
            else:
                self._release([held])

    @contextmanager
    def pinned(self, rows: Sequence[RowDomain]) -> Iterator[list[ResidentAdapter | MixRow | None]]:
        """Pin every adapter ``rows`` name for the block (one call's rows), loading what is not resident.

        Args:
            rows: per row an adapter name, a :class:`~adapterhub.runtime.mixing.Mix`, a pin the caller
                already holds (used as it is, not pinned again), or ``None``.

        Yields:
            Per row its entry: a :class:`ResidentAdapter`, a :class:`~adapterhub.runtime.mixing.MixRow`
            (a mix's virtual slot, answering in its adapters' layers until the block ends) or ``None``.

        Raises:
            MemoryBudgetError: the rows need more slots than the limits allow; and what :meth:`pin` raises.

        >>> with residency.pinned(["legal", None, Mix.of({"finance": 0.7, "legal": 0.3})]) as entries:  # doctest: +SKIP
        ...     routing = residency.routing(entries)
        """
        names = [*rows, *(part for row in rows if isinstance(row, Mix) for part, _ in row.parts)]
        distinct = list(dict.fromkeys(name for name in names if isinstance(name, str)))
        staged = self._staged(distinct, exact=False)
        with self._lock:
            entries = self._pin_all(distinct, exact=False, staged=staged)
            resolved = dict(zip(distinct, entries))
            mixes, installed = self._mix_slots(rows, resolved, pinned=entries)
        try:
            yield [_entry_of(row, resolved, mixes) for row in rows]
        finally:
            with self._lock:
                installed.close()
                self._release(entries)

    # --- what pinned rows need --------------------------------------------------------------
    def routing(self, rows: Sequence[Routed], *, repeat: int = 1) -> RowRouting:
        """How one call's rows (pinned entries, mix rows or ``None``) reach their adapters.

        Args:
            rows: one per row, in batch order.
            repeat: rows ``generate`` expands each row into (beams, return sequences).
        """
        return route(self._methods, [None if row is None else (row.method, row.slot) for row in rows],
                     repeat=repeat, device=self._device)

    def prefix_tokens(self, entry: Routed) -> int:
        """Virtual tokens a row of ``entry`` carries in front of its prompt (0 unless a prefix-routed adapter)."""
        method = None if entry is None else self._methods[entry.method]
        if method is None or method.routes != "prefix":
            return 0
        return int(method.tokens(entry.slot))  # a prefix-routed method counts its slot's virtual tokens

    def head_logits(self, hidden: Any, pooled: Any, rows: Sequence[Routed]) -> list[Any]:
        """Each row's logits from its adapter's encoder head (``None`` for rows without one).

        Args:
            hidden: ``[B, T, H]`` last hidden states of one encoder forward; ``pooled``: ``[B, H]`` or ``None``.
            rows: the pinned entry (or ``None``) of each of the ``B`` rows.
        """
        slots = RowSlots.build([BARE if row is None else row.slot for row in rows], device=self._device)
        return self._heads.apply(hidden, pooled, slots)

    def __repr__(self) -> str:
        return f"Residency(resident={[info.name for info in self.report()]})"

    # --- internals (called with the lock held) ---------------------------------------------------------
    def _staged(self, refs: Sequence[str], *, exact: bool) -> dict[str, StagedAdapter]:
        """Each ref that is not resident, read, checked and prepared *without* the lock (disk, sha256, Hub
        pulls), so rows of resident adapters keep decoding meanwhile; refs whose lookup fails are left to the
        locked path, which raises their error."""
        staged = {}
        for ref in refs:
            with self._lock:
                if self._table.get(ref) is not None:
                    continue
            try:
                name, source = self._reader.target(ref, exact=exact)
            except (AdapterNotFoundError, InvalidNameError):
                continue
            with self._lock:
                entry = self._table.get(name)
            if entry is None or entry.source != source:
                try:
                    staged[ref] = self._reader.fetch(source, name=name)
                except BaseException:
                    with self._lock:
                        self.counters.misses["device"] += 1  # a lookup that missed, and a load that failed
                    raise
        return staged

    def _pin_all(self, refs: Sequence[str], *, exact: bool,
                 staged: Mapping[str, StagedAdapter]) -> list[ResidentAdapter]:
        """Resolve and pin each ref in turn (a wait for a slot releases the lock); all or none stay pinned."""
        pinned: list[ResidentAdapter] = []
        try:
            for ref in refs:
                entry = self._table.get(ref)
                (self.counters.hits if entry is not None else self.counters.misses)["device"] += 1
                if entry is None:
                    protect = frozenset(e.name for e in pinned)  # this call's own adapters: never evicted for it
                    entry = (self._installed(staged[ref], protect=protect) if ref in staged else
                             self._load(ref, name=ref, protect=protect) if exact and is_versioned(ref) else
                             self._resolve(ref, protect=protect))
                entry.pins += 1
                entry.hits += 1
                pinned.append(entry)
        except BaseException:
            self._release(pinned)
            raise
        for entry in pinned:
            self._table.touch(entry)
        return pinned

    def _mix_slots(self, rows: Sequence[RowDomain], resolved: Mapping[str, ResidentAdapter], *,
                   pinned: Sequence[ResidentAdapter]) -> tuple[dict[Mix, MixRow], ExitStack]:
        """A virtual slot for each mix among ``rows``, installed in its adapters' layers until the stack closes.

        On failure (an adapter that cannot mix) the ``pinned`` entries are released before the error propagates.
        """
        installed = ExitStack()
        try:
            mixes = mixing.resolve(rows, resolved, new_slot=self._table.new_slot)
            installed.enter_context(mixing.installed(self._methods, list(mixes.values())))
        except BaseException:
            installed.close()
            self._release(pinned)
            raise
        return mixes, installed

    def _release(self, entries: Sequence[ResidentAdapter]) -> None:
        for entry in entries:
            entry.pins -= 1
        self._slot_freed.notify_all()

    def _resolve(self, name: str, *, protect: frozenset[str]) -> ResidentAdapter:
        entry = self._table.get(name)
        if entry is not None:
            return entry
        known = self._reader.known(name)
        if known is not None:  # evicted earlier: reload the same version
            return self._install(self._reader.fetch(known, name=name), protect=protect)
        try:
            return self._load(name, name=None, protect=protect)
        except (AdapterNotFoundError, InvalidNameError) as error:
            if sources.is_path(name):
                raise  # a folder: the error says it is missing, not that a domain is unknown
            raise sources.unknown_domain(name, resident=self._table.names(), registry=self.registry) from error

    def _load(self, ref: str | os.PathLike, *, name: str | None, protect: frozenset[str]) -> ResidentAdapter:
        name, source = self._reader.identify(ref, name=name)
        entry = self._table.get(name)
        if entry is not None and entry.source == source:
            self._table.touch(entry)
            return entry
        return self._install(self._reader.fetch(source, name=name), protect=protect)

    def _installed(self, staged: StagedAdapter, *, protect: frozenset[str]) -> ResidentAdapter:
        """``staged`` in a slot: the resident entry when another call installed that version meanwhile."""
        current = self._table.get(staged.name)
        if current is not None and current.source == staged.source:
            self._table.touch(current)
            return current
        return self._install(staged, protect=protect)

    def _install(self, staged: StagedAdapter, *, protect: frozenset[str]) -> ResidentAdapter:
        started = time.perf_counter()
        method = self._methods[staged.method]
        loaded, victims = self._table.room_for(staged.name, staged.source, staged.nbytes, protect=protect,
                                               evict=self._evict, wait=self._slot_freed.wait,
                                               slot_wait_s=self._slot_wait_s)
        if loaded is not None:  # another call loaded the same version while this one waited
            return loaded
        for victim in victims:
            self._evict(victim)
        entry = ResidentAdapter(name=staged.name, slot=self._table.new_slot(), method=method.name,
                                source=staged.source, nbytes=staged.nbytes, file_bytes=staged.file_bytes,
                                task=staged.task, domain=staged.domain)
        method.install(entry.slot, staged.prepared)
        if staged.head is not None:
            self._heads.install(entry.slot, staged.head)
        self._table.add(entry)
        self._reader.remember(entry.name, entry.source)
        self.counters.observe_load(staged.origin, staged.read_seconds + time.perf_counter() - started)
        self.counters.record("load", "device", entry.name)
        return entry

    def _evict(self, entry: ResidentAdapter) -> None:
        self._methods[entry.method].remove(entry.slot)
        self._heads.remove(entry.slot)
        self._table.pop(entry.name)
        self._slot_freed.notify_all()
        self.counters.record("evict", "device", entry.name)


def _entry_of(row: RowDomain, resolved: Mapping[str, ResidentAdapter],
              mixes: Mapping[Mix, MixRow]) -> ResidentAdapter | MixRow | None:
    if row is None or isinstance(row, (ResidentAdapter, MixLease)):
        return row
    return mixes[row] if isinstance(row, Mix) else resolved[row]

