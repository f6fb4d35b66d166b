"""Prefix tuning with per-row prefixes, as PEFT's ``PeftModelForCausalLM`` computes it.

PEFT stores ``prompt_embeddings`` ``[tokens, layers * 2 * token_dim]`` and, at
inference, puts them as-is into the KV cache before the input (keys unrotated),
prepends ones to the attention mask and offsets positions by ``tokens``.

A batch whose rows use different prefixes (or none) gets one cache of
``P = max tokens`` entries per layer: row ``i``'s prefix fills the last
``tokens_i`` of them and the mask hides the rest, so LoRA rows, bare rows and
prefix rows of any length share one forward::

    keys[layer]:  [batch, kv_heads, P, head_dim]      mask: [batch, P] (1 where row i has a prefix entry)
    positions:    row i starts at tokens_i, like PEFT with that adapter alone
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from ..._transformers import kv_geometry, text_config
from ...errors import IncompatibleBaseError, InvalidAdapterError
from ...memory import owned, tensor_bytes
from ...tokens import PrefixBatch
from ..rows import BARE
from .spec import WEIGHTS_KEY

# model types whose cache layout PEFT post-processes or special-cases: not served here
_SPECIAL_CACHE_MODELS = ("bloom", "gpt_bigcode", "gemma2", "gemma3", "gemma4", "chatglm", "glm")


@dataclass
class PreparedPrefix:
    keys: Any  # [layers, kv_heads, tokens, head_dim]
    values: Any  # [layers, kv_heads, tokens, head_dim]

    @property
    def tokens(self) -> int:
        return int(self.keys.shape[2])

    @property
    def nbytes(self) -> int:
        return tensor_bytes(self.keys, self.values)


@dataclass
class PrefixMethod:
    base: Any
    name: str = "prefix"
    routes: str = "prefix"
    _slots: dict[int, PreparedPrefix] = field(default_factory=dict)

    def __post_init__(self) -> None:
        import torch

        self._text_config = text_config(self.base.model.config)
        geometry = kv_geometry(self.base.model.config)
        self._layers, self._kv_heads, self._head_dim = geometry.layers, geometry.kv_heads, geometry.head_dim
        self._dtype = getattr(torch, self.base.spec.dtype)
        self._device = next(self.base.model.parameters()).device

    def prepare(self, config: dict[str, Any], tensors: dict[str, Any]) -> PreparedPrefix:
        model_type = str(getattr(self._text_config, "model_type", ""))
        if model_type.startswith(_SPECIAL_CACHE_MODELS):
            raise InvalidAdapterError(f"prefix tuning on {model_type!r} bases is not supported by the runtime")
        if int(config.get("num_transformer_submodules") or 1) != 1:
            raise InvalidAdapterError("only decoder-only prefix adapters (num_transformer_submodules=1) are supported")
        if WEIGHTS_KEY not in tensors:
            raise InvalidAdapterError(f"the prefix adapter has no {WEIGHTS_KEY!r} tensor (found {sorted(tensors)})")
        tokens = int(config["num_virtual_tokens"])
        layers, heads = int(config["num_layers"]), int(config["num_attention_heads"])
        head_dim = int(config["token_dim"]) // heads
        expected = (self._layers, self._kv_heads, self._head_dim)
        if (layers, heads, head_dim) != expected:
            raise IncompatibleBaseError(
                f"the prefix adapter was made for {layers} layers x {heads} KV heads x head_dim {head_dim}, but the "
                f"base has {expected[0]} x {expected[1]} x {expected[2]}; it belongs to another base")
        embeddings = tensors[WEIGHTS_KEY]
        if tuple(embeddings.shape) != (tokens, layers * 2 * heads * head_dim):
            raise InvalidAdapterError(f"{WEIGHTS_KEY} has shape {tuple(embeddings.shape)}, expected "
                                      f"{(tokens, layers * 2 * heads * head_dim)} from adapter_config.json")
        # PEFT: view [tokens, layers*2, heads, head_dim] -> per layer (key, value) = (2l, 2l+1)
        stacked = embeddings.view(tokens, layers * 2, heads, head_dim).permute(1, 2, 0, 3)
        return PreparedPrefix(keys=owned(stacked[0::2], dtype=self._dtype, device=self._device),
                              values=owned(stacked[1::2], dtype=self._dtype, device=self._device))

    def install(self, slot: int, prepared: PreparedPrefix) -> None:
        self._slots[slot] = prepared

    def remove(self, slot: int) -> None:
        self._slots.pop(slot, None)

    def tokens(self, slot: int) -> int:
        """Virtual tokens the prefix in ``slot`` puts in front of its rows (0 for an empty slot)."""
        prepared = self._slots.get(slot)
        return 0 if prepared is None else prepared.tokens

    def batch(self, row_slots: Sequence[int], *, repeat: int = 1) -> PrefixBatch | None:
        """The prefix cache for rows using ``row_slots`` (``BARE`` or a non-prefix slot = no prefix).

        ``repeat`` expands every row in place, as ``generate`` does for beams.
        Returns ``None`` when no row has a prefix.
        """
        import torch
        from transformers import DynamicCache

        rows = [slot for slot in row_slots for _ in range(repeat)]
        used = {slot: self._slots[slot] for slot in set(rows) if slot != BARE and slot in self._slots}
        if not used:
            return None
        width = max(prefix.tokens for prefix in used.values())
        batch = len(rows)
        lengths = torch.tensor([used[s].tokens if s in used else 0 for s in rows], dtype=torch.long)
        mask = (torch.arange(width) >= width - lengths[:, None]).long()
        shape = (batch, self._kv_heads, width, self._head_dim)
        only = next(iter(used)) if len(used) == 1 and all(s in used for s in rows) else None
        indices = {slot: torch.tensor([i for i, s in enumerate(rows) if s == slot], device=self._device)
                   for slot in used}
        cache = DynamicCache(config=self.base.model.config)
        for layer in range(self._layers):
            if only is not None:  # every row, one prefix: broadcast, no copy
                keys = used[only].keys[layer].unsqueeze(0).expand(shape)
                values = used[only].values[layer].unsqueeze(0).expand(shape)
            else:
                keys = torch.zeros(shape, dtype=self._dtype, device=self._device)
                values = torch.zeros(shape, dtype=self._dtype, device=self._device)
                for slot, prefix in used.items():
                    keys[indices[slot], :, width - prefix.tokens:] = prefix.keys[layer]
                    values[indices[slot], :, width - prefix.tokens:] = prefix.values[layer]
            cache.update(keys, values, layer)
        return PrefixBatch(cache=cache, mask=mask.to(self._device), lengths=lengths.to(self._device), repeat=repeat)
