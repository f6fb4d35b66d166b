"""The host tier: adapters already read, verified and deserialised, kept in RAM under a byte budget.

Residency has three tiers: device slots (what the layers read) ← this host tier ← the registry on
disk. A load that finds its adapter here skips the file read, the sha256 check, the base check and
the deserialisation. What is held depends on where the base runs:

- on the CPU, the adapter *prepared* for a slot (:class:`~adapterhub.runtime.staging.StagedAdapter`):
  host RAM is the device, so a host hit hands the same prepared tensors to the slot and copies nothing;
- on CUDA, the checked tensors as read, in pinned memory: a host hit is non-blocking copies to the
  device, then the method prepares them there (GPU memory is only what the device slots hold).

Entries are kept in LRU order and evicted, least recently used first, when a new one would overflow
the budget; an entry that alone exceeds the budget is simply not kept. Concurrent loads of one source
share one read. Sizes are the tensors' own bytes, so adapters of different ranks and target sets share
one budget without padding to the largest.

>>> tier = HostTier(budget_bytes=64 * 2**20, device="cpu", prepare=lambda payload: payload)
>>> tier.report()
[]
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Callable, Union

from .slots import ResidentInfo
from .sources import AdapterPayload
from .staging import StagedAdapter

Held = Union[StagedAdapter, AdapterPayload]  # what one host copy keeps: prepared (CPU) or as read (CUDA)

LOAD_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
"""Upper bounds (seconds) of the load-latency histogram (:class:`TierCounters`)."""


@dataclass
class HostCopy:
    """One adapter held in host RAM (prepared on a CPU base; as read, pinned, on CUDA) and its use."""

    item: Held
    nbytes: int
    hits: int = 0
    last_used: float = field(default_factory=time.time)


@dataclass
class TierCounters:
    """Counts per tier since start (``device``, ``host``): loads, evictions, hits and misses, and how long
    making an adapter device-resident took, by the tier it came from (``host`` or ``disk``)."""

    loads: dict[str, int] = field(default_factory=lambda: {"device": 0, "host": 0})
    evictions: dict[str, int] = field(default_factory=lambda: {"device": 0, "host": 0})
    hits: dict[str, int] = field(default_factory=lambda: {"device": 0, "host": 0})
    misses: dict[str, int] = field(default_factory=lambda: {"device": 0, "host": 0})
    load_counts: dict[str, list[int]] = field(  # per origin: loads at or under each bucket bound, then all
        default_factory=lambda: {origin: [0] * (len(LOAD_SECONDS_BUCKETS) + 1) for origin in ("host", "disk")})
    load_sums: dict[str, float] = field(default_factory=lambda: {"host": 0.0, "disk": 0.0})
    listeners: list[Callable[[str, str, str], None]] = field(default_factory=list)

    def subscribe(self, listener: Callable[[str, str, str], None]) -> None:
        """Call ``listener(event, tier, name)`` on every ``"load"`` and ``"evict"`` of the device tier (from
        inside the residency's lock: keep it quick; it may read the residency, never load or pin)."""
        self.listeners.append(listener)

    def record(self, event: str, tier: str, name: str) -> None:
        """Count one ``"load"`` or ``"evict"`` in ``tier`` and tell the listeners."""
        (self.loads if event == "load" else self.evictions)[tier] += 1
        for listener in self.listeners:
            listener(event, tier, name)

    def observe_load(self, origin: str, seconds: float) -> None:
        """Record one device load that came from ``origin`` (``host`` or ``disk``) and took ``seconds``."""
        counts = self.load_counts[origin]
        for index, bound in enumerate(LOAD_SECONDS_BUCKETS):
            if seconds <= bound:
                counts[index] += 1
        counts[-1] += 1
        self.load_sums[origin] += seconds

    def histogram(self, origin: str) -> tuple[list[int], float]:
        """``(cumulative counts at each bound of LOAD_SECONDS_BUCKETS and +Inf, sum of seconds)`` from ``origin``."""
        return list(self.load_counts[origin]), self.load_sums[origin]

    def hit_ratio(self, tier: str) -> float:
        """Lookups in ``tier`` that found the adapter there (0.0 before the first lookup)."""
        total = self.hits[tier] + self.misses[tier]
        return self.hits[tier] / total if total else 0.0


class HostTier:
    """Checked adapters by source (``legal@2`` or a folder), LRU under ``budget_bytes``.

    Args:
        budget_bytes: most bytes of tensors held (``0``: the tier is off, every load reads the disk and
            hands its freshly read buffer on, which a method may prepare in place).
        device: the device loads copy to; on CUDA the held tensors are pinned and copied non-blocking.
        prepare: turns a checked payload (on ``device``) into what a slot receives
            (:func:`~adapterhub.runtime.staging.stage` with the residency's methods).
        counters: where host loads, hits, misses and evictions are counted (shared with the device tier).
    """

    def __init__(self, budget_bytes: int, *, device: Any, prepare: Callable[[AdapterPayload], StagedAdapter],
                 counters: TierCounters | None = None) -> None:
        import torch

        self.budget_bytes = int(budget_bytes)
        self.device = torch.device(device)
        self.prepare = prepare
        self.keeps_prepared = self.device.type == "cpu"  # host RAM is the device: hold what slots use
        self.counters = counters or TierCounters()
        self._entries: OrderedDict[str, HostCopy] = OrderedDict()
        self._reading: dict[str, Future] = {}  # source -> the read in progress (others wait for it)
        self._lock = threading.Lock()

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return sum(copy.nbytes for copy in self._entries.values())

    def fetch(self, source: str, *, name: str, read: Callable[[], AdapterPayload]) -> StagedAdapter:
        """The adapter at ``source``, named ``name``, prepared for a slot: from this tier when held, else
        ``read()`` (the disk) once and prepared.

        On the CPU the prepared tensors are the held ones (slots only read them). On CUDA they were
        prepared on the device from non-blocking copies of the pinned ones (ordered on the current stream
        before the kernels that read them).

        Raises:
            whatever ``read`` or ``prepare`` raises (to every caller waiting on the same read).
        """
        started = time.perf_counter()
        if self.budget_bytes <= 0:  # the tier is off: every load reads the disk
            return self._handed(self.prepare(read()), name, "disk", started)
        with self._lock:
            copy = self._entries.get(source)
            if copy is not None:
                self._entries.move_to_end(source)
                copy.hits += 1
                copy.last_used = time.time()
                self.counters.hits["host"] += 1
                return self._handed(copy.item, name, "host", started)
            pending = self._reading.get(source)
            owner = pending is None
            if owner:
                pending = self._reading[source] = Future()
                self.counters.misses["host"] += 1
        if not owner:  # another call is reading it: share that read
            return self._handed(pending.result(), name, "host", started)
        try:
            held = self._keep(read())
        except BaseException as error:
            pending.set_exception(error)
            raise
        finally:
            with self._lock:
                self._reading.pop(source, None)
        pending.set_result(held)
        return self._handed(held, name, "disk", started)

    def discard(self, source: str) -> bool:
        """Drop ``source``'s copy (an unloaded adapter); returns whether one was held."""
        with self._lock:
            return self._entries.pop(source, None) is not None

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def report(self) -> list[HostCopy]:
        """Every held copy, most recently used first."""
        with self._lock:
            return list(reversed(self._entries.values()))

    def usage(self) -> dict[str, int | None]:
        """``adapters`` held, their ``bytes``, ``budget_bytes`` (and ``max_resident``: ``None``, no count limit)."""
        with self._lock:
            return {"adapters": len(self._entries), "bytes": sum(copy.nbytes for copy in self._entries.values()),
                    "budget_bytes": self.budget_bytes, "max_resident": None}

    def info(self) -> list[ResidentInfo]:
        """Every held copy as :meth:`AdapterHub.resident` reports it (``tier="host"``), most recently used first."""
        return [ResidentInfo(name=c.item.name, method=c.item.method, bytes=c.nbytes,
                             file_bytes=c.item.file_bytes, source=c.item.source, domain=c.item.domain,
                             task=c.item.task.type, tier="host", hits=c.hits,
                             last_used=datetime.fromtimestamp(c.last_used, tz=timezone.utc))
                for c in self.report()]

    # --- internals ----------------------------------------------------------------
    def _keep(self, payload: AdapterPayload) -> Held:
        """Hold ``payload`` (prepared on the CPU, pinned on CUDA) when it fits the budget, evicting the least
        recently used; returns what callers share (the held copy, or the unheld one when it does not fit)."""
        if self.keeps_prepared:  # the freshly read buffer may be prepared in place: nothing else holds it
            held: Held = self.prepare(payload)
            nbytes = held.nbytes
        else:
            nbytes = payload_bytes(payload)
            if nbytes > self.budget_bytes:
                return payload
            held = replace(payload, tensors=_pinned(payload.tensors))
        if nbytes > self.budget_bytes:  # never held
            return held
        with self._lock:
            total = sum(copy.nbytes for copy in self._entries.values()) + nbytes
            while total > self.budget_bytes and self._entries:
                _, evicted = self._entries.popitem(last=False)
                total -= evicted.nbytes
                self.counters.record("evict", "host", evicted.item.name)
            self._entries[payload.source] = HostCopy(item=held, nbytes=nbytes)
            self.counters.record("load", "host", payload.name)
        return held

    def _handed(self, held: Held, name: str, origin: str, started: float) -> StagedAdapter:
        """``held`` as one load receives it: prepared (from non-blocking copies of pinned tensors on CUDA;
        a plain dict, so nothing is prepared in place in shared memory), named ``name``, timed."""
        if isinstance(held, AdapterPayload):
            tensors = {key: tensor.to(self.device, non_blocking=True) for key, tensor in held.tensors.items()}
            held = self.prepare(replace(held, tensors=tensors))
        return replace(held, name=name, origin=origin, read_seconds=time.perf_counter() - started)


def payload_bytes(payload: AdapterPayload) -> int:
    """Bytes of a payload's tensors (what the host tier counts against its budget)."""
    return sum(tensor.numel() * tensor.element_size() for tensor in payload.tensors.values())


def _pinned(tensors: dict[str, Any]) -> dict[str, Any]:
    """CPU tensors in page-locked memory, so the copies to a CUDA device can be non-blocking."""
    return {key: tensor.pin_memory() for key, tensor in tensors.items()}
