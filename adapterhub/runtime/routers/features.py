"""What a router reads of a text: the resident base's own hidden state after one layer, mean-pooled over
the text's tokens, beside the mean of its token embeddings (no second model, no prompt template).

Only the layers up to the router's ``layer`` run: a forward hook stops the pass there, so routing a text
costs ``(layer + 1) / layers`` of one bare forward over the raw text. The hooks stay on the blocks and act only
inside a routing pass of their own thread or asyncio task, so serving threads may route while others decode.

>>> features(base.model, base.tokenizer, ["Revenue fell 8%."], layer=3).shape  # doctest: +SKIP
torch.Size([1, 576])
>>> features(base.model, base.tokenizer, ["Revenue fell 8%."], layer=3, embedding=True).shape  # doctest: +SKIP
torch.Size([1, 1152])
"""

from __future__ import annotations

import threading
import weakref
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Sequence

from ...errors import ConfigError


EMBEDDING = -1
"""The ``layers`` key of the token embeddings' mean (what the embedding layer puts out, before block 0)."""
BATCH_TOKENS = 384
"""Padded tokens per routing batch: on a 2-core CPU, batches of 256-512 ran 36 texts of ~30 tokens to block 7
22% faster than batches of 32 texts (and 1024 tokens), as fast as 8 texts."""


class _Reached(Exception):
    """Raised by the hook once the wanted layer has run (the rest of the forward is skipped)."""


@dataclass
class _Capture:
    """What the routing pass running in this thread / task wants from the blocks' hooks."""

    layers: frozenset[int]
    last: int
    caught: dict[int, Any] = field(default_factory=dict)


_CAPTURE: ContextVar[_Capture | None] = ContextVar("adapterhub_router_capture", default=None)
_HOOKED: weakref.WeakSet[Any] = weakref.WeakSet()
_INSTALLING = threading.Lock()


def _install(block: Any, index: int) -> None:
    """Give ``block`` its capture hook once, for good. The hook acts only inside a routing pass of the same
    thread or task (a ``ContextVar``), so the scheduler's forwards in other threads pass through untouched,
    and no hook is added or removed while another thread may be running the model."""
    with _INSTALLING:
        if block in _HOOKED:
            return
        block.register_forward_hook(_keeper(index))
        _HOOKED.add(block)


def _keeper(index: int) -> Any:
    def keep(module: Any, args: Any, output: Any) -> None:
        capture = _CAPTURE.get()
        if capture is None or index not in capture.layers:
            return
        capture.caught[index] = output[0] if isinstance(output, tuple) else output
        if index == capture.last:
            raise _Reached

    return keep


def decoder_layers(model: Any) -> Any:
    """The base's list of transformer blocks (the ``ModuleList`` as long as ``num_hidden_layers``).

    Raises:
        ConfigError: no such list (a model architecture the router cannot read).
    """
    import torch

    config = getattr(model, "config", None)
    count = getattr(getattr(config, "text_config", config), "num_hidden_layers", None)
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count:
            return module
    raise ConfigError(f"cannot find the {count} transformer layers of {type(model).__name__}; routers read a "
                      "decoder (llama-like) or BERT-like base")


def features(model: Any, tokenizer: Any, texts: Sequence[str], *, layer: int, embedding: bool = False,
             batch_tokens: int = BATCH_TOKENS, device: Any = None) -> Any:
    """``[texts, hidden]`` float32: the mean over each text's tokens of the hidden state after block ``layer``;
    with ``embedding``, ``[texts, 2 x hidden]``: the mean of its token embeddings, then that (:func:`gate_features`).

    Run it with the base's adapters switched off (the caller's bare routing, or a plain base).

    Raises:
        ConfigError: ``layer`` is past the base's last block.
    """
    layers = [EMBEDDING, layer] if embedding else [layer]
    found = layer_features(model, tokenizer, texts, layers=layers, batch_tokens=batch_tokens, device=device)
    return gate_features(found, layer) if embedding else found[layer]


def gate_features(found: dict[int, Any], layer: int) -> Any:
    """``[rows, 2 x hidden]``: the token embeddings' mean, then block ``layer``'s (what a router's gate reads)."""
    import torch

    return torch.cat([found[EMBEDDING], found[layer]], -1)


def layer_features(model: Any, tokenizer: Any, texts: Sequence[str], *, layers: Sequence[int],
                   batch_tokens: int = BATCH_TOKENS, device: Any = None, progress: Any = None) -> dict[int, Any]:
    """:func:`features` after each block of ``layers`` from one pass that stops after the highest of them.

    Texts run sorted by length, in batches of at most ``batch_tokens`` tokens with padding (one text at least):
    little padding, and no batch so wide that the CPU's caches stop helping.

    ``progress``: called with the number of texts done after each batch (e.g. a progress bar's ``update``).
    """
    import torch

    blocks = decoder_layers(model)
    for layer in layers:
        if not (0 <= layer < len(blocks) or layer == EMBEDDING):
            raise ConfigError(f"router layer {layer} is not one of the base's {len(blocks)} layers "
                              f"(0-{len(blocks) - 1})")
    device = device if device is not None else next(model.parameters()).device
    for layer in layers:
        _install(model.get_input_embeddings() if layer == EMBEDDING else blocks[layer], layer)
    capture = _Capture(layers=frozenset(layers), last=max(layers))
    pooled: dict[int, list[Any]] = {layer: [] for layer in layers}
    ids = [tokenizer(text)["input_ids"] or [tokenizer.eos_token_id or 0] for text in texts]
    order = sorted(range(len(ids)), key=lambda index: len(ids[index]))  # batches of like lengths: little padding
    token = _CAPTURE.set(capture)
    try:
        for batch in _batches([len(ids[index]) for index in order], batch_tokens):
            chunk = [ids[order[position]] for position in batch]
            input_ids, mask = _right_padded(chunk, tokenizer.pad_token_id, device)
            capture.caught.clear()
            with torch.inference_mode():
                try:
                    model(input_ids=input_ids, attention_mask=mask, use_cache=False)
                except _Reached:
                    pass
            for layer in layers:
                hidden = capture.caught[layer]
                weights = mask.unsqueeze(-1).to(hidden.dtype)
                pooled[layer].append(((hidden * weights).sum(1) / weights.sum(1)).float().cpu())
            if progress is not None:
                progress(len(chunk))
    finally:
        _CAPTURE.reset(token)
    width = getattr(getattr(model, "config", None), "hidden_size", 0)
    restore = torch.tensor(order).argsort()
    return {layer: torch.cat(parts)[restore] if parts else torch.zeros(0, width) for layer, parts in pooled.items()}


def _batches(lengths: Sequence[int], budget: int) -> list[range]:
    """Consecutive runs of ``lengths`` (sorted ascending) whose padded size (count x longest) stays within ``budget``.

    >>> _batches([5, 6, 9, 30], 20)
    [range(0, 2), range(2, 3), range(3, 4)]
    """
    runs, start = [], 0
    for end in range(1, len(lengths) + 1):
        if end == len(lengths) or (end + 1 - start) * lengths[end] > budget:
            runs.append(range(start, end))
            start = end
    return runs


def _right_padded(rows: Sequence[list[int]], pad: int | None, device: Any) -> tuple[Any, Any]:
    """Token ids padded on the right (a causal model's real tokens keep positions 0..n-1 whatever the batch)."""
    import torch

    width = max(len(row) for row in rows)
    pad = pad if pad is not None else 0
    ids = torch.tensor([row + [pad] * (width - len(row)) for row in rows], device=device)
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows], device=device)
    return ids, mask
