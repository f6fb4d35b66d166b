"""Which adapter slot each row of a batch uses, and the per-forward context that carries it.

The batched math of every method never sees adapter names or residency. It receives a
:class:`RowSlots` — one slot index per row, :data:`BARE` for rows on the bare
base — and walks its groups. :func:`find_segments` is the pure core. The runtime
builds the rows of a call (``adapterhub.runtime.batch``) and makes them current with
:func:`routed`; each patched layer reads them with :func:`active_rows`.

>>> find_segments([3, 3, BARE, 5, 5, 5])
(Segment(slot=3, start=0, stop=2), Segment(slot=-1, start=2, stop=3), Segment(slot=5, start=3, stop=6))
>>> rows = RowSlots.build([3, 3, BARE, 5])
>>> rows.uniform is None, [slot for slot, _ in rows.groups]
(True, [3, 5])
>>> RowSlots.build([3, 3]).for_batch(4).slots  # beams expand every row in place
(3, 3, 3, 3)
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from ..errors import ConfigError

BARE = -1
"""Slot index of a row that uses no adapter (it pays nothing)."""


@dataclass(frozen=True)
class Segment:
    """A maximal run of consecutive rows ``[start, stop)`` that use one slot."""

    slot: int
    start: int
    stop: int


def find_segments(slots: Sequence[int]) -> tuple[Segment, ...]:
    """Split per-row slot indices into maximal runs of equal slots, in row order."""
    segments: list[Segment] = []
    start = 0
    for row in range(1, len(slots) + 1):
        if row == len(slots) or slots[row] != slots[start]:
            segments.append(Segment(int(slots[start]), start, row))
            start = row
    return tuple(segments)


@dataclass(frozen=True)
class RowSlots:
    """Per-row slot indices of one batch, pre-grouped for the layer math.

    Attributes:
        slots: ``[batch]`` slot index per row (``BARE`` = no adapter).
        uniform: the slot every row shares (possibly ``BARE``), or ``None`` when rows differ.
        groups: ``(slot, rows)`` for each adapter slot present; ``rows`` is a ``slice``
            when the slot's rows are contiguous (a view, no copy), else a ``LongTensor``
            of row indices on ``device`` (one gather and one scatter per layer).
    """

    slots: tuple[int, ...]
    uniform: int | None
    groups: tuple[tuple[int, Any], ...]
    device: Any = "cpu"
    _expanded: dict[int, RowSlots] = field(default_factory=dict, repr=False, compare=False)
    _memo: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def build(cls, slots: Sequence[int], *, device: Any = "cpu") -> RowSlots:
        """Group ``slots`` (one per row); row indices live on ``device``."""
        slots = tuple(int(slot) for slot in slots)
        distinct = set(slots)
        uniform = slots[0] if len(distinct) == 1 else None
        groups: list[tuple[int, Any]] = []
        if uniform is None:
            segments = find_segments(slots)
            for slot in sorted(distinct - {BARE}):
                runs = [segment for segment in segments if segment.slot == slot]
                groups.append((slot, _row_index(runs, device)))
        elif uniform != BARE:
            groups.append((uniform, slice(0, len(slots))))
        return cls(slots=slots, uniform=uniform, groups=tuple(groups), device=device)

    def for_batch(self, batch_size: int) -> RowSlots:
        """These rows for a batch of ``batch_size`` rows.

        ``generate`` expands every prompt to ``num_beams`` (or ``num_return_sequences``)
        consecutive rows; the mapping follows with ``repeat_interleave`` semantics.
        """
        if batch_size == len(self.slots):
            return self
        factor, remainder = divmod(batch_size, len(self.slots))
        if remainder or factor < 1:
            raise ConfigError(f"a forward pass got {batch_size} rows but the call routed {len(self.slots)}; "
                              "generate options may only repeat each row (num_beams, num_return_sequences)")
        expanded = self._expanded.get(factor)
        if expanded is None:
            expanded = RowSlots.build([slot for slot in self.slots for _ in range(factor)], device=self.device)
            self._expanded[factor] = expanded
        return expanded

    def column_mask(self, columns: Sequence[tuple[int, int, int]], *, dtype: Any) -> Any:
        """``[rows, width]`` of 0/1: row ``i`` keeps the columns ``[start, stop)`` its slot has in ``columns``.

        ``columns`` lists ``(slot, start, stop)`` of adapters laid side by side (a layer's stacked
        LoRA pairs, ``width`` the last stop); rows of other slots (or bare) get zeros. Built once
        per layout and dtype for these rows: every decode step and layer of that layout reuses it.

        >>> RowSlots.build([7, BARE, 3]).column_mask([(3, 0, 1), (7, 1, 3)], dtype=None).tolist()
        [[0.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
        """
        return self.memo((tuple(columns), dtype), self._column_mask, columns, dtype)

    def _column_mask(self, columns: Sequence[tuple[int, int, int]], dtype: Any) -> Any:
        import torch

        span = {slot: (start, stop) for slot, start, stop in columns}
        mask = torch.zeros(len(self.slots), columns[-1][2] if columns else 0, dtype=dtype)
        for row, slot in enumerate(self.slots):
            if slot in span:
                mask[row, span[slot][0]:span[slot][1]] = 1
        return mask.to(self.device)

    def memo(self, key: Any, make: Any, *args: Any) -> Any:
        """``make(*args)``, computed once per ``key`` for these rows (a layer's plan, a column mask).

        Whatever these rows route to is pinned while they run, so what is derived from them stays valid.
        """
        value = self._memo.get(key)
        if value is None:
            value = self._memo[key] = make(*args)
        return value


def _row_index(runs: list[Segment], device: Any) -> Any:
    if len(runs) == 1:
        return slice(runs[0].start, runs[0].stop)
    import torch

    rows = [row for run in runs for row in range(run.start, run.stop)]
    return torch.tensor(rows, dtype=torch.long, device=device)


_ACTIVE_ROWS: ContextVar[RowSlots | None] = ContextVar("adapterhub_active_rows", default=None)


def active_rows() -> RowSlots | None:
    """The rows of the forward pass running in this thread / asyncio task, if any."""
    return _ACTIVE_ROWS.get()


@contextmanager
def routed(rows: RowSlots | None) -> Iterator[None]:
    """Make ``rows`` the routing of every adapter layer called inside the block.

    A ``ContextVar``, so concurrent threads and asyncio tasks never see each other's rows.
    """
    token = _ACTIVE_ROWS.set(rows)
    try:
        yield
    finally:
        _ACTIVE_ROWS.reset(token)
