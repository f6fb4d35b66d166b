"""One pass through the layers for a prompt prefix every row shares and the rows behind it.

A training batch whose rows all start with the same tokens (a template's
instruction and label list) computes that start once instead of once per row.
Run as its own batch of one, the start costs a second pass through every layer
whose matrix products have a handful of rows (finance's 20 tokens): each reads
the whole weight matrix for little work, so the start took about as long as the
rows themselves. Here the start and the rows travel as one packed sequence
``[1, P + R·T]``: every linear layer multiplies once, and only attention tells
them apart — the start attends causally to itself (behind any cached tokens, e.g.
a prefix-tuning prefix), each row to the cache, the whole start and its own
earlier, unpadded tokens. The same numbers as the two passes (to float rounding).
Only for model types whose attention is known to be plain causal attention
through transformers' attention interface (:func:`packable`); others keep the two passes.

>>> with packed_rows(body, PackedLayout.of(prefix=20, attention_mask=mask, cached=0)):  # doctest: +SKIP
...     hidden = body(inputs_embeds=packed, position_ids=positions).last_hidden_state
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch

NAME = "adapterhub_packed_prefix"
"""The attention implementation a body uses inside :func:`packed_rows`."""

PLAIN_CAUSAL = frozenset({"llama", "mistral", "qwen2", "qwen3"})
"""Model types whose attention is rotary and fully causal: no position biases (ALiBi), soft-capping or sinks
(a sliding window, where configured, is checked by :func:`packable`)."""

_LAYOUT: ContextVar[PackedLayout | None] = ContextVar("adapterhub_packed_layout", default=None)


@dataclass(frozen=True)
class PackedLayout:
    """Where the shared start and the rows sit in a packed sequence, and who may attend to whom."""

    prefix: int  # P: tokens of the shared start
    rows: int  # R
    length: int  # T: tokens per (padded) row
    cached: int  # C: tokens already in the cache, in front of everything (a prefix-tuning prefix)
    start_mask: torch.Tensor | None  # [P, C + P] bool, or None: plainly causal (no cache)
    rows_mask: torch.Tensor  # [R, 1, T, C + P + T] bool

    @classmethod
    def of(cls, *, prefix: int, attention_mask: torch.Tensor, cached: int = 0) -> PackedLayout:
        """The layout for rows with ``attention_mask`` (``[R, T]``, 1 = token, right padding)."""
        rows, length = attention_mask.shape
        device = attention_mask.device
        causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
        own = causal[None] & attention_mask.bool()[:, None, :]  # [R, T, T]
        before = torch.ones(rows, length, cached + prefix, dtype=torch.bool, device=device)
        start_mask = None
        if cached:
            start_mask = torch.ones(prefix, cached + prefix, dtype=torch.bool, device=device).tril(cached)
        return cls(prefix=prefix, rows=rows, length=length, cached=cached, start_mask=start_mask,
                   rows_mask=torch.cat([before, own], dim=2)[:, None])

    def positions(self, device: Any) -> torch.Tensor:
        """``[1, P + R·T]`` position ids: the start's, then each row's continuing after it.

        >>> PackedLayout.of(prefix=2, attention_mask=torch.ones(2, 3), cached=1).positions("cpu").tolist()
        [[1, 2, 3, 4, 5, 3, 4, 5]]
        """
        start = torch.arange(self.cached, self.cached + self.prefix, device=device)
        row = torch.arange(self.cached + self.prefix, self.cached + self.prefix + self.length, device=device)
        return torch.cat([start, row.repeat(self.rows)])[None]

    def pack(self, start: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """``start`` (``[P, ...]``) and ``rows`` (``[R, T, ...]``) as one sequence ``[1, P + R·T, ...]``."""
        return torch.cat([start, rows.flatten(0, 1)])[None]

    def unpack(self, packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[1, P + R·T, ...]`` back to the start ``[P, ...]`` and the rows ``[R, T, ...]``."""
        return packed[0, :self.prefix], packed[0, self.prefix:].unflatten(0, (self.rows, self.length))


def packable(body: Any) -> bool:
    """Whether a packed pass through this decoder ``body`` computes what separate passes would
    (a :data:`PLAIN_CAUSAL` model type, no sliding window in use)."""
    config = body.config
    window = getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True)
    return getattr(config, "model_type", None) in PLAIN_CAUSAL and not window


@contextmanager
def packed_rows(body: Any, layout: PackedLayout) -> Iterator[None]:
    """A block in which the decoder ``body``'s attention reads its input as ``layout`` packs it."""
    config = body.config
    previous = config._attn_implementation
    token = _LAYOUT.set(layout)
    config._attn_implementation = NAME
    try:
        yield
    finally:
        config._attn_implementation = previous
        _LAYOUT.reset(token)


def _attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: Any,
               dropout: float = 0.0, scaling: float | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Attention over a packed sequence (see the module docstring); ``query`` ``[1, H, P + R·T, d]``,
    ``key``/``value`` ``[1, KV, C + P + R·T, d]``; returns ``[1, P + R·T, H, d]``."""
    import torch.nn.functional as F

    layout = _LAYOUT.get()
    if layout is None:
        raise RuntimeError(f"the {NAME!r} attention runs only inside packed_rows()")
    prefix, rows, length, seen = layout.prefix, layout.rows, layout.length, layout.cached + layout.prefix
    options = {"scale": scaling, "dropout_p": dropout if module.training else 0.0,
               "enable_gqa": query.shape[1] != key.shape[1]}
    key_start, value_start = key[:, :, :seen], value[:, :, :seen]
    start = F.scaled_dot_product_attention(query[:, :, :prefix], key_start, value_start,
                                           attn_mask=layout.start_mask, is_causal=layout.start_mask is None, **options)

    def by_row(states: torch.Tensor) -> torch.Tensor:  # [1, heads, R·T, d] -> [R, heads, T, d]
        return states[0].unflatten(1, (rows, length)).transpose(0, 1)

    keys = torch.cat([key_start.expand(rows, -1, -1, -1), by_row(key[:, :, seen:])], dim=2)
    values = torch.cat([value_start.expand(rows, -1, -1, -1), by_row(value[:, :, seen:])], dim=2)
    out = F.scaled_dot_product_attention(by_row(query[:, :, prefix:]), keys, values, attn_mask=layout.rows_mask,
                                         **options)  # [R, H, T, d]
    packed = torch.cat([start[0].transpose(0, 1), out.permute(0, 2, 1, 3).flatten(0, 1)])  # [P + R·T, H, d]
    return packed[None], None


def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, _attention)


_register()
