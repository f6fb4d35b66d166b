"""LoHa served per row: each slot's ``dW`` formed once at load, added to the rows that use it.

PEFT forms ``dW = (w1_a @ w1_b) * (w2_a @ w2_b) * alpha / r`` ``[out, in]`` on every forward and adds
``x @ dW.T``. The Hadamard product has no low-rank form to exploit per row, so the runtime forms ``dW``
once (float32, like PEFT, then the base dtype) and keeps it: a LoHa adapter costs ``out × in`` per adapted
layer when resident (the factors on disk are ``2 r (out + in)``). Each targeted linear layer's
``forward`` is wrapped once by a :class:`LohaLayer`, which adds each row's ``x @ dW.T`` for its slot::

    out[rows of slot s] += x[rows of slot s] @ dW_s.T          x: [rows, ..., in], dW_s: [out, in]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ...errors import IncompatibleBaseError, InvalidAdapterError
from ...memory import tensor_bytes
from ..serving import AddedLayer, PatchedLayers, PreparedLayers
from .spec import FACTORS, parse_key, scaling

_ATTR = "_adapterhub_loha_layer"


@dataclass
class LohaDelta:
    """One adapter's ``dW`` ``[out, in]`` in one layer (scaling folded in)."""

    weight: Any

    @property
    def nbytes(self) -> int:
        return tensor_bytes(self.weight)

    def added(self, x: Any, out: Any) -> Any:
        """``x @ dW.T`` in the output's dtype (PEFT: ``F.linear`` in the delta's dtype, then the input's)."""
        import torch.nn.functional as F

        return F.linear(x.to(self.weight.dtype), self.weight).to(out.dtype)


class LohaLayer(AddedLayer):
    """The replacement ``forward`` of one linear layer: base output plus each LoHa row's ``x @ dW.T``."""


@dataclass
class LohaMethod(PatchedLayers):
    """LoHa slots over one base; layers are patched on first use and shared by every hub on that base."""

    name: str = "loha"
    layer_class: ClassVar[type] = LohaLayer
    patch_attr: ClassVar[str] = _ATTR

    def prepare(self, config: dict[str, Any], tensors: dict[str, Any]) -> PreparedLayers:
        from .spec import LOHA

        LOHA.check_files(config, {key: tuple(t.shape) for key, t in tensors.items()}, where="the adapter")
        factors: dict[str, dict[str, Any]] = {}
        for key, tensor in tensors.items():
            parsed = parse_key(key)
            if parsed is None or parsed[1] not in FACTORS:
                raise InvalidAdapterError(f"unsupported LoHa weight {key!r} (the runtime serves linear layers' "
                                          "hada_w1/w2 factors)")
            factors.setdefault(parsed[0], {})[parsed[1]] = tensor
        layers = {name: self._delta(name, parts, config) for name, parts in factors.items()}
        return PreparedLayers.of(layers)

    def _delta(self, module_name: str, parts: dict[str, Any], config: dict[str, Any]) -> LohaDelta:
        import torch

        module = self.linear(module_name)
        w1a, w1b, w2a, w2b = (parts[name].to(self._device, torch.float32) for name in FACTORS)
        rank = w1a.shape[1]
        if (tuple(w1a.shape) != (module.out_features, rank) or tuple(w2a.shape) != (module.out_features, rank)
                or tuple(w1b.shape) != (rank, module.in_features) or tuple(w2b.shape) != (rank, module.in_features)):
            raise IncompatibleBaseError(f"LoHa factors of {module_name!r} do not fit a linear layer of "
                                        f"{module.in_features} -> {module.out_features} features (rank {rank}); "
                                        "the adapter belongs to another base")
        weight = (w1a @ w1b) * (w2a @ w2b) * torch.tensor(scaling(config, module_name, rank))  # as PEFT forms it
        return LohaDelta(weight.to(self._dtype).contiguous())
