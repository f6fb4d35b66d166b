"""Dropout for adapter inputs that draws a random number per *dropped* element, not per element.

PEFT's LoRA layers compute ``B(A(dropout(x)))`` with ``torch.nn.Dropout``, which
draws one random number for every element of ``x``. On a CPU torch's generator
costs about 25 ns a draw, so with ``lora_dropout: 0.05`` on all 210 linear layers
of the default base the masks took about 14% of a training step (and more with
two threads, since the generator runs on one). Here the dropped positions are
drawn directly: the gaps between them are geometric(p), one uniform number
each (``floor(log u / log(1 - p)) + 1``), so a mask costs about ``p·n`` draws.
The result is the same distribution as ``nn.Dropout``: each element dropped
independently with probability ``p``, survivors scaled by ``1 / (1 - p)``
(tests/training/test_dropout.py checks the rate, its spread and independence).

:func:`use_sparse_dropout` swaps the dropout modules of a PEFT model's adapter
layers for :class:`SparseDropout` (they hold no weights, so nothing saved changes).

>>> import torch
>>> layer = SparseDropout(0.05).train()
>>> out = layer(torch.ones(4, 1000))
>>> bool(((out == 0) | (out == 1 / 0.95)).all())
True
"""

from __future__ import annotations

import math
from typing import Any

import torch

SPARSE_UP_TO = 0.25  # above this drop rate a mask of per-element draws is as cheap


class SparseDropout(torch.nn.Module):
    """``nn.Dropout(p)`` with about ``p·n`` random draws per call instead of ``n`` (for small ``p``)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or x.numel() == 0:
            return x
        if self.p > SPARSE_UP_TO or x.device.type != "cpu":  # an accelerator's generator is fast already
            return torch.nn.functional.dropout(x, self.p, True)
        out = x * (1.0 / (1.0 - self.p))
        out.view(-1).index_fill_(0, dropped_positions(x.numel(), self.p), 0.0)  # autograd zeroes their gradient
        return out

    def extra_repr(self) -> str:
        return f"p={self.p}"


def dropped_positions(n: int, p: float) -> torch.Tensor:
    """Sorted flat positions among ``n`` where each is dropped with probability ``p``, independently."""
    expected = n * p
    chunk = int(expected + 6 * math.sqrt(expected) + 16)
    log_keep = math.log1p(-p)
    ends, last = [], 0.0
    while last < n:  # gaps until the positions pass the end (one more chunk in about 1e-9 of calls)
        uniform = torch.rand(chunk, dtype=torch.float64).clamp_(min=1e-300)
        positions = torch.floor(torch.log(uniform) / log_keep).add_(1).cumsum_(0).add_(last)
        ends.append(positions)
        last = float(positions[-1])
    positions = torch.cat(ends) if len(ends) > 1 else ends[0]
    inside = int(torch.searchsorted(positions, float(n), right=True))  # sorted: the ones within are a prefix
    return positions[:inside].sub(1).long()


def dropout_mask(n: int, p: float, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A flat mask of ``n`` values: ``0`` with probability ``p`` each, independently, else ``1 / (1 - p)``."""
    return torch.full((n,), 1.0 / (1.0 - p), dtype=dtype).index_fill_(0, dropped_positions(n, p), 0.0)


def use_sparse_dropout(model: Any) -> int:
    """Replace the ``nn.Dropout`` modules of a PEFT model's LoRA layers (``lora_dropout``) with
    :class:`SparseDropout` of the same rate; returns how many were replaced."""
    replaced = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, torch.nn.ModuleDict):
            continue
        for name, dropout in list(dropouts.items()):
            if type(dropout) is torch.nn.Dropout and 0.0 < dropout.p <= SPARSE_UP_TO:
                dropouts[name] = SparseDropout(dropout.p).train(dropout.training)
                replaced += 1
    return replaced
