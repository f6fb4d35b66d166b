"""LoRA's layer patch: a linear layer's replacement ``forward`` that adds each row's delta from its slot.

The math (:func:`~.kernels.add_low_rank`, stacked pairs, decode plans) is :mod:`.kernels`; this file
decides per forward which of them applies to the active rows (:func:`~adapterhub.methods.rows.active_rows`).
Per adapter and layer (constants folded at load, see :mod:`.serving`)::

    delta(x) = x @ A.T @ B'.T + b'    (+ (g - 1) * (base(x) - bias) with DoRA)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...memory import tensor_bytes
from ..rows import active_rows
from .kernels import GATHER_MIN_TOKENS, DecodePlan, SlotWeights, add_low_rank, even_blocks


@dataclass
class LoraWeights:
    """One adapter in one layer, constants folded (see the module docstring)."""

    A: Any  # [r, in], contiguous: PEFT's layout (see ``adapterhub.memory.written_into``)
    B: Any  # [out, r], contiguous
    bias: Any = None  # [out] or None
    dora_gain: Any = None  # [out] = g - 1, or None for plain LoRA
    scale: float | None = None  # PEFT's scaling, applied to each delta as PEFT does (then B is PEFT's own);
    # None: folded into B (exact when it is a power of two, and always with DoRA, lora_bias or a non-fp32 base)

    @property
    def nbytes(self) -> int:
        return tensor_bytes(self.A, self.B, self.bias, self.dora_gain)

    @property
    def folded_B(self) -> Any:
        """``B`` with the scaling in it (what the stacked and gathered paths multiply by); a new tensor only when
        :attr:`scale` is kept apart."""
        return self.B if self.scale is None else self.B * self.scale

    def add_to(self, x: Any, out: Any, base_bias: Any) -> None:
        """Add this adapter's delta to ``out = base(x)`` in place.

        ``x``: ``[rows, ..., in]``; ``out``: ``[rows, ..., out]``, contiguous. The second
        matmul accumulates straight into ``out`` (``addmm_``): no delta tensor is made.
        """
        flat = out.view(-1, out.shape[-1])
        if self.dora_gain is not None:  # from the base output before anything is added to it
            dora = self.dora_gain * (flat if base_bias is None else flat - base_bias)
        add_low_rank(x, flat, self.A, self.B, scale=self.scale)
        if self.bias is not None:
            flat.add_(self.bias)
        if self.dora_gain is not None:
            flat.add_(dora)


class LoraLayer:
    """The replacement ``forward`` of one linear layer: base output plus each row's slot delta."""

    def __init__(self, linear: Any) -> None:
        self.linear = linear
        self.base_forward = linear.forward
        self.weights = SlotWeights()  # slot -> weights

    def __call__(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        out = self.base_forward(x, *args, **kwargs)
        rows = active_rows()
        if rows is None or not self.weights:
            return out
        rows = rows.for_batch(x.shape[0])
        out = out.contiguous()
        if rows.uniform is not None:  # fast path: one matmul pair on the whole batch
            weights = self.weights.get(rows.uniform)
            if weights is not None:
                weights.add_to(x, out, self.linear.bias)
            return out
        if x.numel() >= GATHER_MIN_TOKENS * x.shape[0] * x.shape[-1]:  # long rows (prefill)
            if not self._add_row_gathered(x, out, rows):  # one matmul pair per adapter present
                self._add_per_group(x, out, [(self.weights[slot], index) for slot, index in rows.groups
                                             if slot in self.weights])
            return out
        plan = rows.memo(self, self._plan, rows)  # short rows (decode steps): one plan per routing and layer
        if plan.stacked is not None:  # one matmul pair over the stacked adapters
            plan.stacked.add_to(x, out, plan.mask)
        self._add_per_group(x, out, plan.rest)
        return out

    def _add_per_group(self, x: Any, out: Any, groups: Any) -> None:
        """One matmul pair per ``(weights, rows)``: a view for contiguous rows, else a gather and a scatter."""
        for weights, index in groups:
            if isinstance(index, slice):  # contiguous rows: a view, updated in place
                weights.add_to(x[index], out[index], self.linear.bias)
            else:
                part = out.index_select(0, index)
                weights.add_to(x.index_select(0, index), part, self.linear.bias)
                out.index_copy_(0, index, part)

    def _plan(self, rows: Any) -> DecodePlan:
        """How short rows of ``rows`` get their deltas here: the stacked pairs of every plain LoRA present
        (built once per set of adapters, when at least two qualify), one pair per group for the rest."""
        present = [(slot, index, self.weights[slot]) for slot, index in rows.groups if slot in self.weights]
        plain = {slot: weights for slot, _, weights in present if weights.bias is None and weights.dora_gain is None}
        stacked = mask = None
        if len(plain) >= 2 and len({w.A.dtype for w in plain.values()}) == 1:
            stacked = self.weights.stack(plain, blocks=even_blocks(rows, present, plain))
            if not stacked.blocks:
                mask = rows.column_mask(stacked.columns, dtype=stacked.A.dtype)
        rest = tuple((weights, index) for slot, index, weights in present if stacked is None or slot not in plain)
        return DecodePlan(stacked=stacked, mask=mask, rest=rest)

    def _add_row_gathered(self, x: Any, out: Any, rows: Any) -> bool:
        """Mixed batch, long rows: each row's own ``A`` and ``B`` gathered, one batched matmul pair.

        ``x @ A_row.T @ B_row.T`` for every row at once (``bmm``) costs about what the
        single-adapter path does, where one matmul pair per adapter pays a fixed overhead
        per adapter and a gather/scatter for interleaved rows. Applies when every row
        has a plain LoRA of one rank and dtype here; the caller sends only rows of at least
        ``GATHER_MIN_TOKENS`` tokens (decode steps take the stacked pairs of :meth:`_plan`,
        which read each adapter's weights once instead of copying them per row). Returns
        whether it handled the batch.
        """
        import torch

        tokens = x.numel() // (x.shape[0] * x.shape[-1])
        per_row = [self.weights.get(slot) for slot in rows.slots]
        first = per_row[0]
        if first is None or first.A.dtype != out.dtype:
            return False
        for weights in per_row:
            if (weights is None or weights.bias is not None or weights.dora_gain is not None
                    or weights.A.shape != first.A.shape):
                return False
        if len({id(w) for w in per_row}) == 1:  # one adapter after all (the others are absent from this layer)
            return False
        A_t = torch.stack([w.A for w in per_row]).transpose(1, 2)  # [rows, in, r] from contiguous blocks
        B_t = torch.stack([w.B for w in per_row]).transpose(1, 2)  # [rows, r, out]
        if any(w.scale is not None for w in per_row):  # scalings kept apart: into this copy, one pass
            B_t = B_t * torch.tensor([1.0 if w.scale is None else w.scale for w in per_row],
                                     dtype=B_t.dtype, device=B_t.device)[:, None, None]
        x_rows = x.reshape(x.shape[0], tokens, x.shape[-1])
        if x_rows.dtype != A_t.dtype:
            x_rows = x_rows.to(A_t.dtype)
        out_rows = out.view(out.shape[0], tokens, out.shape[-1])
        out_rows.baddbmm_(torch.bmm(x_rows, A_t), B_t)
        return True
