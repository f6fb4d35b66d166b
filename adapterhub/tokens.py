"""Token batches in front of a causal LM: left padding, and the prefix cache rows attend to.

Shared by the runtime (generation, ``predict``) and training's evaluation, so
both feed the model the same way. Prompts are left-padded (generation appends
on the right) and positions follow the attention mask, so a padded row
computes what it computes alone. Rows with a prefix adapter get a pre-filled
cache and the matching mask columns; positions then start after each row's
own prefix, which reproduces PEFT's offsets row by row.

>>> ids, mask = left_pad([[5, 6], [7]], pad_id=0, device="cpu")
>>> ids.tolist(), mask.tolist()
([[5, 6], [0, 7]], [[1, 1], [0, 1]])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence


@dataclass
class PrefixBatch:
    """The prefix part of one batch: a filled cache and its attention-mask columns.

    ``P`` is the longest prefix in the batch; row ``i``'s prefix fills the last
    ``lengths[i]`` of the ``P`` cache entries and ``mask`` hides the rest.
    """

    cache: Any  # transformers DynamicCache holding P entries per layer: [batch, kv_heads, P, head_dim]
    mask: Any  # [batch, P] long
    lengths: Any  # [batch] long: prefix tokens of each row (0 for rows without one)
    repeat: int = 1  # every call row appears ``repeat`` times in a row (beams)


def left_pad(rows: Sequence[Sequence[int]], *, pad_id: int, device: Any) -> tuple[Any, Any]:
    """``(input_ids, attention_mask)``, both ``[len(rows), longest]``, padded on the left."""
    import torch

    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            input_ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
            attention_mask[i, width - len(row):] = 1
    return input_ids.to(device), attention_mask.to(device)


def prefixed_inputs(attention_mask: Any, prefix: PrefixBatch | None = None) -> tuple[Any, Any, Any]:
    """``(mask, position_ids, cache)`` for left-padded rows behind their prefixes (``cache`` ``None`` without).

    Position ``t`` of row ``i`` is ``prefix_tokens_i + (real tokens before t)``:
    PEFT's positions for that adapter alone, independent of padding.
    """
    import torch

    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    if prefix is None:
        return attention_mask, positions, None
    mask = torch.cat([prefix.mask, attention_mask.to(prefix.mask.dtype)], dim=1)
    return mask, positions + prefix.lengths[:, None], prefix.cache


def common_prefix(rows: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all ``rows`` share.

    >>> common_prefix([[1, 2, 3], [1, 2, 5, 6]])
    2
    """
    first = rows[0]
    length = min(len(row) for row in rows)
    for row in rows[1:]:
        length = next((i for i in range(length) if row[i] != first[i]), length)
    return length


def pad_id_of(tokenizer: Any) -> int:
    """The id padded positions get: the tokenizer's pad token, else its end token, else 0 (always masked)."""
    for candidate in (tokenizer.pad_token_id, getattr(tokenizer, "eos_token_id", None)):
        if candidate is not None:
            return int(candidate)
    return 0
