"""LoRA's batched math, apart from the layer patching: the low-rank update, stacked pairs, decode plans.

These functions and classes see tensors and row groups only (never names, slots' owners or the registry):

* :func:`add_low_rank` — ``out += ((x @ A.T) * mask) @ B.T`` in place;
* :class:`StackedLora` — several adapters' pairs read in one matmul pair (side by side, or in blocks);
* :class:`DecodePlan` — what one layer does for short rows of one routing;
* :class:`SlotWeights` — a layer's ``{slot: weights}`` with the stacks built from them.

>>> import torch
>>> out = torch.zeros(2, 3); add_low_rank(torch.ones(2, 4), out, torch.ones(1, 4), torch.ones(3, 1))
>>> out.tolist()
[[4.0, 4.0, 4.0], [4.0, 4.0, 4.0]]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GATHER_MIN_TOKENS = 16  # rows at least this long (prefill) take the per-row gathered path
_STACKS_KEPT = 2  # sets of adapters whose stacked pairs a layer keeps (two concurrent mixed calls don't thrash)


def even_blocks(rows: Any, present: list[tuple[int, Any, Any]], plain: dict[int, Any]) -> bool:
    """Whether every row has a plain adapter here, all of one rank, in equal runs of rows in slot order
    (what ``generate`` and the stepper make of e.g. 8 rows over 8, 4 or 2 adapters)."""
    size = len(rows.slots) // len(plain)
    shape = next(iter(plain.values())).A.shape
    return len(present) == len(plain) and size * len(plain) == len(rows.slots) and all(
        isinstance(index, slice) and index.start == i * size and index.stop == (i + 1) * size
        and weights.A.shape == shape for i, (_, index, weights) in enumerate(present))


def add_low_rank(x: Any, flat: Any, A: Any, B: Any, *, mask: Any = None, scale: float | None = None) -> None:
    """``flat += ((x @ A.T) * mask) @ B.T`` in place; ``flat``: ``out`` as ``[tokens, out]``, contiguous.

    ``mask`` (``[rows, rank]``, optional) scales each row's hidden columns; the second matmul
    accumulates straight into ``flat`` (``addmm_``) when the dtypes agree: no delta tensor is made.
    ``scale`` (optional) multiplies the delta before it is added, in PEFT's order and rounding
    (``out + (h @ B.T) * scale``; a delta tensor is made then).
    """
    import torch.nn.functional as F

    if x.dtype != A.dtype:
        x = x.to(A.dtype)
    hidden = F.linear(x, A).view(-1, A.shape[0])
    if mask is not None:
        hidden.view(mask.shape[0], -1, A.shape[0]).mul_(mask[:, None])
    if scale is not None:
        flat.add_(F.linear(hidden, B).mul_(scale).to(flat.dtype))
        return
    if flat.dtype == hidden.dtype:
        flat.addmm_(hidden, B.t())
    else:
        flat.add_((hidden @ B.t()).to(flat.dtype))


@dataclass(frozen=True)
class StackedLora:
    """Several adapters' pairs in one layer, read in one matmul pair however many a decode step mixes
    (one pair per adapter pays a fixed cost per call and per adapter).

    Side by side (any ranks, any row order): ``A`` ``[sum r, in]``, ``B`` ``[out, sum r]``; ``x @ A.T``
    computes every adapter's hidden columns for every row, a row mask
    (:meth:`~adapterhub.runtime.batch.RowSlots.column_mask`) keeps each row's own, ``@ B.T`` adds
    the deltas. Both contiguous in PEFT's orientation, like each adapter's own pair, so the BLAS takes the
    kernel a single adapter's rows take (a row's delta is the same bits mixed or alone).

    In ``blocks`` (rows in equal runs per adapter, one rank): ``A`` ``[k, r, in]`` (read transposed), ``B``
    ``[k, r, out]`` (a copy: ``bmm`` reads a transposed ``B`` at about half the speed on decode's few rows,
    measured 14 vs 22 µs for 8 rank-16 adapters at 576 wide; the deltas then differ from a row alone by
    about 1e-6) and one ``bmm`` pair over the runs, which computes no other adapter's columns (8 rows over 8
    adapters: an eighth of the side-by-side multiply-adds).
    """

    slots: tuple[int, ...]
    columns: tuple[tuple[int, int, int], ...]  # (slot, start, stop) of each adapter's columns
    A: Any
    B: Any
    blocks: bool = False

    @classmethod
    def of(cls, members: dict[int, Any], *, blocks: bool = False) -> StackedLora:
        import torch

        columns, start = [], 0
        for slot, weights in members.items():
            columns.append((slot, start, start + weights.A.shape[0]))
            start += weights.A.shape[0]
        A, B = [w.A for w in members.values()], [w.folded_B for w in members.values()]
        if blocks:  # B as [k, r, out]: bmm reads a transposed B at half speed for decode's few rows
            A, B = torch.stack(A), torch.stack([b.t() for b in B])  # [k, r, in], [k, r, out]
        else:
            A, B = torch.cat(A, dim=0), torch.cat(B, dim=1)  # [sum r, in], [out, sum r]
        return cls(slots=tuple(members), columns=tuple(columns), A=A, B=B, blocks=blocks)

    def add_to(self, x: Any, out: Any, mask: Any) -> None:
        """Add every row's delta to ``out`` (contiguous) in place; ``mask`` for the side-by-side form."""
        import torch

        if not self.blocks:
            add_low_rank(x, out.view(-1, out.shape[-1]), self.A, self.B, mask=mask)
            return
        count = self.A.shape[0]
        hidden = torch.bmm(x.reshape(count, -1, x.shape[-1]).to(self.A.dtype), self.A.transpose(1, 2))
        runs = out.view(count, -1, out.shape[-1])
        if runs.dtype == hidden.dtype:
            runs.baddbmm_(hidden, self.B)
        else:
            runs.add_(torch.bmm(hidden, self.B).to(runs.dtype))


@dataclass(frozen=True)
class DecodePlan:
    """What one layer does for short rows of one routing (kept by the routing: its adapters stay pinned)."""

    stacked: StackedLora | None
    mask: Any  # [rows, sum r] 0/1, or None
    rest: tuple[tuple[Any, Any], ...]  # (weights, rows) of adapters not stacked (bias, DoRA)


class SlotWeights(dict):
    """A layer's ``{slot: weights}`` and the stacked pairs of the last ``_STACKS_KEPT`` sets of adapters
    decoded together; installing or removing a slot drops the stacks that hold it (their memory goes
    with the adapter)."""

    def __init__(self) -> None:
        super().__init__()
        self.stacks: dict[tuple[Any, bool], StackedLora] = {}  # (slots, blocks) -> stacked; least recent first

    def stack(self, members: dict[int, Any], *, blocks: bool) -> StackedLora:
        """``members`` (slot -> plain weights of this table) stacked: built once per set and form, then reused."""
        key = (tuple(members), blocks)
        stacked = self.stacks.pop(key, None) or StackedLora.of(members, blocks=blocks)
        if all(self.get(slot) is weights for slot, weights in members.items()):  # no slot changed meanwhile
            self.stacks[key] = stacked
            if len(self.stacks) > _STACKS_KEPT:
                self.stacks = dict(list(self.stacks.items())[-_STACKS_KEPT:])
        return stacked

    def _forget(self, slot: int) -> None:
        if any(slot in slots for slots, _ in list(self.stacks)):
            self.stacks = {key: value for key, value in list(self.stacks.items()) if slot not in key[0]}

    def __setitem__(self, slot: int, weights: Any) -> None:
        self._forget(slot)
        super().__setitem__(slot, weights)

    def __delitem__(self, slot: int) -> None:
        self._forget(slot)
        super().__delitem__(slot)

    def pop(self, slot: int, *default: Any) -> Any:
        self._forget(slot)
        return super().pop(slot, *default)
