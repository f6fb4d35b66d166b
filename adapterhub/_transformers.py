"""Private shims over transformers and PEFT layouts, kept in one place.

Every spot that reads a model config's text part, the key/value geometry,
a cache's per-layer tensors or PEFT's weight-key prefix asks here, so a
change in a transformers or PEFT release is mended once.

>>> strip_peft_prefix("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight")
'model.layers.0.self_attn.q_proj.lora_A.weight'
>>> text_config_dict({"text_config": {"num_hidden_layers": 2}})
{'num_hidden_layers': 2}
"""

from __future__ import annotations

import inspect
import logging
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

PEFT_KEY_PREFIX = "base_model.model."
"""What PEFT puts before module names in ``adapter_model.safetensors`` keys."""


def strip_peft_prefix(key: str) -> str:
    """A PEFT weight key relative to the causal-LM model (``model.layers.0...``)."""
    return key[len(PEFT_KEY_PREFIX):] if key.startswith(PEFT_KEY_PREFIX) else key


def text_config(config: Any) -> Any:
    """The language-model part of a transformers config (multimodal configs nest it)."""
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def text_config_dict(config: dict[str, Any]) -> dict[str, Any]:
    """The same for a raw ``config.json`` dict."""
    return config if "num_hidden_layers" in config else config.get("text_config", config)


@dataclass(frozen=True)
class KVGeometry:
    """The key/value cache shape of a decoder: ``[batch, kv_heads, tokens, head_dim]`` per layer."""

    layers: int
    kv_heads: int
    head_dim: int

    @property
    def token_dim(self) -> int:
        """Width of one token's keys (or values) in one layer: what PEFT calls ``token_dim``."""
        return self.kv_heads * self.head_dim


def kv_geometry(config: Any) -> KVGeometry:
    """Layers, KV heads (GQA-aware) and head size of a transformers config."""
    text = text_config(config)
    heads = int(text.num_attention_heads)
    kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(text, "head_dim", None) or int(text.hidden_size) // heads)
    return KVGeometry(layers=int(text.num_hidden_layers), kv_heads=kv_heads, head_dim=head_dim)


def decoder_layer_count(model: Any) -> int:
    """How many decoder layers a transformers causal LM has."""
    return int(text_config(model.config).num_hidden_layers)


def splittable(body: Any) -> bool:
    """Whether :func:`layer_range` can run part of this decoder body (llama-style ``layers``, ``norm``, and
    attention modules numbered by ``layer_idx``)."""
    layers = getattr(body, "layers", None)
    return (layers is not None and hasattr(body, "norm") and len(layers) > 0
            and all(hasattr(getattr(layer, "self_attn", None), "layer_idx") for layer in layers))


@contextmanager
def layer_range(body: Any, start: int, stop: int, *, final_norm: bool = True) -> Iterator[None]:
    """A block in which the decoder ``body`` runs only its layers ``start`` to ``stop - 1``.

    Its ``forward`` then takes the hidden states entering layer ``start`` as
    ``inputs_embeds`` (when ``start > 0``) and, with ``final_norm=False``, returns
    those leaving layer ``stop - 1`` unnormalised: how :mod:`adapterhub.training.trunk` runs
    the frozen first layers once and the adapted ones from their stored outputs. The
    attention layers are renumbered from 0 so a fresh cache holds just these layers.
    """
    import torch

    layers, norm = body.layers, body.norm
    kept = list(layers)[start:stop]
    numbers = [layer.self_attn.layer_idx for layer in kept]
    body.layers = torch.nn.ModuleList(kept)
    if not final_norm:
        body.norm = torch.nn.Identity()
    for index, layer in enumerate(kept):
        layer.self_attn.layer_idx = index
    try:
        yield
    finally:
        for layer, number in zip(kept, numbers):
            layer.self_attn.layer_idx = number
        body.layers, body.norm = layers, norm


def cache_of(output: Any) -> Any:
    """The key/value cache a forward returned (``cache`` in transformers ≥ 5.2x, ``past_key_values`` before)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def cache_argument(module: Any) -> str:
    """The keyword a decoder's ``forward`` takes its cache under."""
    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


def last_positions(length: int, count: int = 1, *, device: Any = "cpu") -> Any:
    """``logits_to_keep`` for the last ``count`` of ``length`` positions, as indices.

    transformers gathers indexed positions into a contiguous ``[rows, count, hidden]`` tensor before the
    vocabulary head; for an integer it slices ``[:, -count:]``, a strided view that torch multiplies as a
    batched product reading the whole head once per row (about 10% of a label-scoring evaluation here).
    """
    import torch

    return torch.arange(length - count, length, device=device)


def cache_layers(cache: Any) -> list[Any]:
    """The filled per-layer entries of a ``DynamicCache``; each has ``.keys`` and ``.values`` ``[batch, heads, T, dim]``."""
    return [layer for layer in cache.layers if getattr(layer, "is_initialized", True)]


def broadcast_cache(cache: Any, rows: int) -> None:
    """Every filled layer of a one-row ``DynamicCache`` viewed as ``rows`` rows (no copy: later updates make new tensors)."""
    for layer in cache_layers(cache):
        layer.keys, layer.values = layer.keys.expand(rows, -1, -1, -1), layer.values.expand(rows, -1, -1, -1)


# --- dependency notices a user can neither act on nor avoid ------------------------------------------------
_BNB_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"
_BNB_KERNEL_NOTICE = "Failed to load CPU gemm_4bit_forward from kernels-community"
_GRADIENT_CHECKPOINTING_DEPRECATION = "`is_gradient_checkpointing` is deprecated"


class _DropNotice(logging.Filter):
    """Drops the one record of a logger that starts with ``prefix``; everything else passes."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def quiet_bitsandbytes_notice() -> None:
    """Drop bitsandbytes' "Failed to load CPU gemm_4bit_forward from kernels-community" warning (idempotent).

    bitsandbytes logs it when it is imported (PEFT imports it) on CPUs with AVX512-BF16 and no
    ``kernels`` package: an optional Hub kernel it replaces with its own. Only that record of
    that logger is dropped. ``import adapterhub`` installs the filter.
    """
    logger = logging.getLogger(_BNB_CPU_LOGGER)
    if not any(isinstance(f, _DropNotice) for f in logger.filters):
        logger.addFilter(_DropNotice(_BNB_KERNEL_NOTICE))


@contextmanager
def quiet_peft_wrapping() -> Iterator[None]:
    """A block in which PEFT may wrap a model without transformers' ``is_gradient_checkpointing`` FutureWarning.

    PEFT (``PeftModel.__init__``, ``prepare_model_for_kbit_training``) reads that deprecated
    attribute; the warning is PEFT's to fix, not the caller's. Only that warning, only in the block.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_GRADIENT_CHECKPOINTING_DEPRECATION, category=FutureWarning)
        yield
