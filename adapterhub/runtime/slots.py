"""The slot table: which adapters are loaded into which slot, their LRU order and the budgets.

Pure bookkeeping, with no lock of its own — :class:`~adapterhub.runtime.residency.Residency`
holds it under its lock, and the tensors live in the methods' slot storage. An entry is
*pinned* while a call uses it, so eviction never pulls an adapter out from under a running forward.

>>> table = SlotTable(max_resident=1)
>>> table.add(ResidentAdapter(name="legal", slot=table.new_slot(), method="lora", source="legal@1",
...                           nbytes=10, file_bytes=10))
>>> [entry.name for entry in table.evictions_for(10, name="finance")]
['legal']
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from ..errors import AdapterInUseError, ConfigError, MemoryBudgetError
from ..prompts import TaskSpec

_SLOT_IDS = itertools.count()  # unique across hubs: LoRA layers are shared by every hub on one base


@dataclass
class ResidentAdapter:
    """One loaded adapter: what :meth:`Residency.pin` hands out (mutable; only the residency changes it)."""

    name: str
    slot: int
    method: str  # a registered method name (a key of ``runtime.methods.build_methods``)
    source: str  # registry reference ("legal@2") or directory it was read from
    nbytes: int  # bytes held in slot storage
    file_bytes: int  # bytes of its adapter_model.safetensors
    task: TaskSpec = field(default_factory=TaskSpec)
    domain: str | None = None
    last_used: float = field(default_factory=time.time)
    pins: int = 0
    hits: int = 0  # pins taken since it was loaded


@dataclass(frozen=True)
class ResidentInfo:
    """What :meth:`AdapterHub.resident` reports for one adapter."""

    name: str
    method: str
    bytes: int
    file_bytes: int
    last_used: datetime
    source: str
    domain: str | None
    task: str  # a TaskSpec type: one of ``adapterhub.prompts.TASK_TYPES``
    pins: int = 0  # running calls (and served rows) holding it now; it cannot be evicted or unloaded while > 0
    tier: str = "device"  # "device": in a slot calls use; "host": read and checked, in host RAM (a copy away)
    hits: int = 0  # uses found it in this tier (device: pins taken; host: loads served from it)


class SlotTable:
    """Resident adapters in LRU order (least recently used first) under optional budgets.

    Args:
        max_resident: most adapters resident at once (``None``: no limit).
        budget_bytes: most slot-storage bytes at once (``None``: no limit).
    """

    def __init__(self, *, max_resident: int | None = None, budget_bytes: int | None = None) -> None:
        if max_resident is not None and max_resident < 1:
            raise ConfigError(f"max_resident={max_resident} must be at least 1 (or None for no limit)")
        if budget_bytes is not None and budget_bytes <= 0:
            raise ConfigError("memory_budget_mb must be positive (or None for no limit)")
        self.max_resident = max_resident
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[str, ResidentAdapter] = OrderedDict()

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str) -> ResidentAdapter | None:
        return self._entries.get(name)

    def names(self) -> list[str]:
        return list(self._entries)

    def entries(self) -> list[ResidentAdapter]:
        return list(self._entries.values())

    @property
    def total_bytes(self) -> int:
        return sum(entry.nbytes for entry in self._entries.values())

    def usage(self) -> dict[str, int | None]:
        """``adapters`` resident, their ``bytes``, and the limits (``budget_bytes``, ``max_resident``; ``None``: none)."""
        return {"adapters": len(self), "bytes": self.total_bytes, "budget_bytes": self.budget_bytes,
                "max_resident": self.max_resident}

    @staticmethod
    def new_slot() -> int:
        return next(_SLOT_IDS)

    def touch(self, entry: ResidentAdapter) -> None:
        """Mark ``entry`` as just used (moves it to the end of the LRU order)."""
        entry.last_used = time.time()
        self._entries.move_to_end(entry.name)

    def add(self, entry: ResidentAdapter) -> None:
        self._entries[entry.name] = entry

    def pop(self, name: str) -> ResidentAdapter | None:
        return self._entries.pop(name, None)

    def evictions_for(self, nbytes: int, *, name: str, protect: frozenset[str] = frozenset()) -> list[ResidentAdapter]:
        """The least recently used entries to evict so that ``nbytes`` more fit.

        Pinned entries and the names in ``protect`` are never chosen.

        Raises:
            MemoryBudgetError: the adapter alone exceeds the byte budget, or not
                enough unpinned adapters can be evicted.
        """
        budget, limit = self.budget_bytes, self.max_resident
        if budget is not None and nbytes > budget:
            raise MemoryBudgetError(f"adapter {name!r} needs {_mib(nbytes)} but memory_budget_mb allows only "
                                    f"{_mib(budget)}; raise memory_budget_mb to at least {nbytes / 2**20:.1f}")
        count, total = len(self._entries) + 1, self.total_bytes + nbytes
        chosen: list[ResidentAdapter] = []
        for entry in self._entries.values():
            if (limit is None or count <= limit) and (budget is None or total <= budget):
                break
            if entry.pins or entry.name in protect:
                continue
            chosen.append(entry)
            count, total = count - 1, total - entry.nbytes
        if (limit is not None and count > limit) or (budget is not None and total > budget):
            busy = [entry.name for entry in self._entries.values() if entry.pins or entry.name in protect]
            budget_mb = "None" if budget is None else f"{budget / 2**20:g}"
            own = [entry for entry in self._entries.values() if entry.name in protect]
            fits_later = ((limit is None or len(own) + 1 <= limit) and
                          (budget is None or sum(entry.nbytes for entry in own) + nbytes <= budget))
            raise (SlotsBusyError if fits_later else MemoryBudgetError)(
                f"no room for adapter {name!r}: {', '.join(busy)} are in use by this or running calls and cannot be "
                f"evicted (max_resident={limit}, memory_budget_mb={budget_mb}); raise the limits or use fewer "
                "domains per call")
        return chosen

    def room_for(self, name: str, source: str, nbytes: int, *, protect: frozenset[str],
                 evict: Callable[[ResidentAdapter], None], wait: Callable[[float], Any],
                 slot_wait_s: float) -> tuple[ResidentAdapter | None, list[ResidentAdapter]]:
        """``(None, entries to evict so ``nbytes`` more fit under ``name``)``, waiting (``wait(seconds)``, at most
        ``slot_wait_s`` in all) while running calls pin them; ``(entry, [])`` when another call loaded the same
        ``source`` meanwhile. Another version under ``name`` is evicted first (``evict``).

        Raises:
            AdapterInUseError: another version under ``name`` is pinned.
            MemoryBudgetError: it can never fit, or the slots stayed busy for ``slot_wait_s``.
        """
        deadline = None
        while True:
            previous = self.get(name)
            if deadline is not None and previous is not None and previous.source == source:
                return previous, []
            if previous is not None:  # another version under the same name: replace it
                if previous.pins:
                    raise AdapterInUseError(f"adapter {name!r} is in use by a running call; load the new version "
                                            "after it returns")
                evict(previous)
            try:
                return None, self.evictions_for(nbytes, name=name, protect=protect)
            except SlotsBusyError as error:  # running calls hold every slot: wait (bounded) for one to return
                now = time.monotonic()
                deadline = now + slot_wait_s if deadline is None else deadline
                if now >= deadline:
                    raise MemoryBudgetError(f"{error} (waited {slot_wait_s:g} s for a running call to free a "
                                            "slot; raise slot_wait_s or max_resident)") from None
                wait(deadline - now)

    def release_all(self, methods: dict[str, Any]) -> None:
        """Free every entry's slot in its method's storage (a hub collected without ``close()``)."""
        for entry in self.entries():
            methods[entry.method].remove(entry.slot)

    def report(self) -> list[ResidentInfo]:
        """Every resident adapter, most recently used first."""
        return [
            ResidentInfo(name=e.name, method=e.method, bytes=e.nbytes, file_bytes=e.file_bytes,
                         last_used=datetime.fromtimestamp(e.last_used, tz=timezone.utc), source=e.source,
                         domain=e.domain, task=e.task.type, pins=e.pins, hits=e.hits)
            for e in reversed(self._entries.values())
        ]


def check_limits(*, max_resident: int | None, memory_budget_mb: float | None, slot_wait_s: float,
                 host_budget_mb: float | None = None) -> SlotTable:
    """An empty :class:`SlotTable` under these limits, once they are checked (before a base is loaded for them).

    Raises:
        ConfigError: ``max_resident`` below 1, a budget that is not positive (``host_budget_mb``: negative),
            or a negative ``slot_wait_s``.
    """
    table = SlotTable(max_resident=max_resident, budget_bytes=budget_bytes(memory_budget_mb))
    if host_budget_mb is not None and (isinstance(host_budget_mb, bool) or not host_budget_mb >= 0):
        raise ConfigError(f"host_budget_mb={host_budget_mb!r} must be a number of MiB >= 0 (0 or None: no host tier)")
    if isinstance(slot_wait_s, bool) or not (isinstance(slot_wait_s, (int, float)) and slot_wait_s >= 0):
        raise ConfigError(f"slot_wait_s={slot_wait_s!r} must be a number of seconds >= 0")
    return table


def budget_bytes(memory_budget_mb: float | None) -> int | None:
    """``memory_budget_mb`` in bytes (``None``: no budget)."""
    return None if memory_budget_mb is None else int(memory_budget_mb * 2**20)


class SlotsBusyError(MemoryBudgetError):
    """No room now because running calls pin the adapters that would be evicted; room frees when they return."""


def _mib(count: int) -> str:
    return f"{count / 2**20:.1f} MiB"
