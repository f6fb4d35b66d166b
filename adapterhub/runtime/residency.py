"""Residency: which adapters are loaded on one base, and the pins that keep them there while rows use them.

One :class:`Residency` per hub owns everything about loaded adapters: the lock and the condition
that waiting loads sleep on, the slot table (LRU order, ``max_resident``, the byte budget), where
each name came from (an evicted adapter reloads the same version on next use), every method's
slot storage and the encoder heads. A call pins what its rows use and unpins when it returns;
every unpin wakes the loads waiting for a slot, whichever door the pin came through (a hub call,
the stepper of a server, a held lease).

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
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence, Union

from ..errors import AdapterInUseError, AdapterNotFoundError, InvalidNameError, MemoryBudgetError
from . import mixing, sources
from .batch import BARE, UNSET, RowRouting, RowSlots
from .heads import HeadBank, default_task, split_payload
from .methods import AdapterMethod, build_methods, route
from .mixing import Mix, MixLease, MixRow, RowDomain
from .slots import ResidentAdapter, ResidentInfo, SlotsBusyError, check_limits

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
        slot_wait_s: how long a load waits for running calls to free a slot before
            :class:`~adapterhub.errors.MemoryBudgetError`.

    Raises:
        ConfigError: bad limits (see :func:`~adapterhub.runtime.slots.check_limits`).

    >>> residency = Residency(base, max_resident=4)  # doctest: +SKIP
    >>> residency.load("legal@2").source             # doctest: +SKIP
    'legal@2'
    """

    def __init__(self, base: Base, *, registry: Any = None, max_resident: int | None = None,
                 memory_budget_mb: float | None = None, slot_wait_s: float = 30.0) -> None:
        self.base = base
        self._table = check_limits(max_resident=max_resident, memory_budget_mb=memory_budget_mb,
                                   slot_wait_s=slot_wait_s)
        self._slot_wait_s = float(slot_wait_s)
        self._methods = build_methods(base)
        self._heads = HeadBank()  # encoder adapters' task heads, by slot
        self._registry_arg = registry
        self._registry: Any = UNSET
        self._lock = threading.RLock()
        self._slot_freed = threading.Condition(self._lock)  # notified whenever a pin is released or a slot freed
        self._sources: dict[str, str] = {}  # name -> source, kept after eviction so it reloads on next use
        self._device = next(base.model.parameters()).device
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
        if self._registry is UNSET:
            self._registry = sources.open_registry(self._registry_arg)
        return self._registry

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
        with self._lock:
            entry = self._load(ref_or_path, name=name, protect=frozenset())
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
            self._sources.pop(name, None)
            if entry is None:
                return False
            self._evict(entry)
            return True

    def close(self) -> None:
        """Unload every adapter and forget every source (the base stays loaded and unchanged)."""
        with self._lock:
            for entry in self._table.entries():
                self._evict(entry)
            self._sources.clear()

    def report(self) -> list[ResidentInfo]:
        """Every resident adapter (name, method, bytes, last use, ...), most recently used first."""
        with self._lock:
            return self._table.report()

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
        with self._lock:
            return self._pin_all([ref], exact=exact)[0]

    def pin_mix(self, mix: Mix, *, exact: bool = False) -> MixLease:
        """Pin every adapter of a weighted mix and give the mix a virtual slot in their layers until :meth:`unpin`.

        Raises:
            ConfigError: an adapter that cannot mix (see :func:`~adapterhub.runtime.mixing.check_mixable`);
            and what :meth:`pin` raises.

        >>> lease = residency.pin_mix(mixing.parse_mix("finance:0.7+legal:0.3"))  # doctest: +SKIP
        >>> residency.unpin(lease)                                                # doctest: +SKIP
        """
        names = [name for name, _ in mix.parts]
        with self._lock:
            parts = self._pin_all(names, exact=exact)
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
        with self._lock:
            entries = self._pin_all(distinct, exact=False)
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
    def _pin_all(self, refs: Sequence[str], *, exact: bool) -> list[ResidentAdapter]:
        """Resolve and pin each ref in turn (a wait for a slot releases the lock); all or none stay pinned."""
        pinned: list[ResidentAdapter] = []
        try:
            for ref in refs:
                entry = self._table.get(ref)
                if entry is None:
                    protect = frozenset(e.name for e in pinned)  # this call's own adapters: never evicted for it
                    entry = self._load(ref, name=ref, protect=protect) if exact and _versioned(ref) else \
                        self._resolve(ref, protect=protect)
                entry.pins += 1
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
        if name in self._sources:  # evicted earlier: reload the same version
            source = self._sources[name]
            payload = sources.fetch(source, registry=self._registry_for(source), base=self.base, name=name)
            return self._install(payload, protect=protect)
        try:
            return self._load(name, name=None, protect=protect)
        except (AdapterNotFoundError, InvalidNameError) as error:
            if sources.is_path(name):
                raise  # a folder: the error says it is missing, not that a domain is unknown
            raise sources.unknown_domain(name, resident=self._table.names(), registry=self.registry) from error

    def _load(self, ref: str | os.PathLike, *, name: str | None, protect: frozenset[str]) -> ResidentAdapter:
        name, source = sources.identify(ref, registry=self._registry_for(ref), name=name)
        entry = self._table.get(name)
        if entry is not None and entry.source == source:
            self._table.touch(entry)
            return entry
        payload = sources.fetch(source, registry=self._registry_for(source), base=self.base, name=name)
        return self._install(payload, protect=protect)

    def _install(self, payload: sources.AdapterPayload, *, protect: frozenset[str]) -> ResidentAdapter:
        method = self._methods[payload.method]
        head, config, tensors = split_payload(payload.config, payload.tensors, method=payload.method, base=self.base)
        prepared = method.prepare(config, tensors)
        nbytes = prepared.nbytes + (head.nbytes if head is not None else 0)
        task = payload.task if head is None or payload.task.is_encoder_task else default_task(config, head)
        loaded, victims = self._room_for(payload, nbytes, protect=protect)
        if loaded is not None:  # another call loaded the same version while this one waited
            return loaded
        for victim in victims:
            self._evict(victim)
        entry = ResidentAdapter(name=payload.name, slot=self._table.new_slot(), method=method.name,
                                source=payload.source, nbytes=nbytes, file_bytes=payload.file_bytes,
                                task=task, domain=payload.domain)
        method.install(entry.slot, prepared)
        if head is not None:
            self._heads.install(entry.slot, head)
        self._table.add(entry)
        self._sources[entry.name] = entry.source
        return entry

    def _room_for(self, payload: sources.AdapterPayload, nbytes: int, *,
                  protect: frozenset[str]) -> tuple[ResidentAdapter | None, list[ResidentAdapter]]:
        """``(None, entries to evict so payload fits)``, waiting (bounded) while running calls pin them;
        ``(entry, [])`` when another call loaded the same version meanwhile."""
        deadline = None
        while True:
            previous = self._table.get(payload.name)
            if deadline is not None and previous is not None and previous.source == payload.source:
                return previous, []
            if previous is not None:  # another version under the same name: replace it
                if previous.pins:
                    raise AdapterInUseError(f"adapter {payload.name!r} is in use by a running call; load the new "
                                            "version after it returns")
                self._evict(previous)
            try:
                return None, self._table.evictions_for(nbytes, name=payload.name, protect=protect)
            except SlotsBusyError as error:  # running calls hold every slot: wait (bounded) for one to return
                now = time.monotonic()
                deadline = now + self._slot_wait_s if deadline is None else deadline
                if now >= deadline:
                    raise MemoryBudgetError(f"{error} (waited {self._slot_wait_s:g} s for a running call to free a "
                                            "slot; raise slot_wait_s or max_resident)") from None
                self._slot_freed.wait(deadline - now)

    def _evict(self, entry: ResidentAdapter) -> None:
        self._methods[entry.method].remove(entry.slot)
        self._heads.remove(entry.slot)
        self._table.pop(entry.name)
        self._slot_freed.notify_all()

    def _registry_for(self, ref: str | os.PathLike) -> Any:
        """The registry, opened only when ``ref`` is a registry reference."""
        return None if sources.is_path(ref) else self.registry


def _entry_of(row: RowDomain, resolved: Mapping[str, ResidentAdapter],
              mixes: Mapping[Mix, MixRow]) -> ResidentAdapter | MixRow | None:
    if row is None or isinstance(row, (ResidentAdapter, MixLease)):
        return row
    return mixes[row] if isinstance(row, Mix) else resolved[row]


def _versioned(ref: str) -> bool:
    """Whether ``ref`` names one version (``legal@2``, ``hf://...``) rather than a name's latest."""
    return "@" in ref or ref.startswith("hf://")
