"""IA³ served per row: each row's vector rescales its own layer input or output.

PEFT's IA³ layer computes, for the adapter's vector ``l``::

    feed-forward layers (l: [1, in]):   y = base(x * l)
    other layers        (l: [out, 1]):  y = base(x) * l

Each targeted linear layer's ``forward`` is replaced once by an
:class:`IA3Layer`; rows without an IA³ vector in that layer pass through
untouched. The layer wraps whatever ``forward`` it finds, so LoRA and
bottleneck patches on the same linear layer chain with it (a row has one
adapter, so at most one of them changes that row).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ...errors import IncompatibleBaseError, InvalidAdapterError
from ...memory import owned, tensor_bytes
from ..rows import active_rows
from ..serving import PatchedLayers, PreparedLayers
from .spec import is_feedforward, parse_key

_ATTR = "_adapterhub_ia3_layer"


@dataclass
class IA3Vector:
    """One adapter's vector in one layer: ``scale`` ``[features]``, on the input (``feedforward``) or output."""

    scale: Any
    feedforward: bool

    @property
    def nbytes(self) -> int:
        return tensor_bytes(self.scale)


class IA3Layer:
    """The replacement ``forward`` of one linear layer: each IA³ row's input or output scaled by its vector."""

    def __init__(self, linear: Any) -> None:
        self.linear = linear
        self.inner_forward = linear.forward
        self.weights: dict[int, IA3Vector] = {}  # slot -> vector

    def __call__(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        rows = active_rows()
        if rows is None or not self.weights:
            return self.inner_forward(x, *args, **kwargs)
        rows = rows.for_batch(x.shape[0])
        present = [(self.weights[slot], index) for slot, index in rows.groups if slot in self.weights]
        if not present:
            return self.inner_forward(x, *args, **kwargs)
        inputs = [(vector, index) for vector, index in present if vector.feedforward]
        if inputs:
            if rows.uniform is not None:
                x = x * inputs[0][0].scale.to(x.dtype)
            else:
                x = x.clone()
                for vector, index in inputs:
                    x[index] = x[index] * vector.scale.to(x.dtype)
        out = self.inner_forward(x, *args, **kwargs)
        for vector, index in present:
            if not vector.feedforward:
                if rows.uniform is not None:
                    return out * vector.scale.to(out.dtype)
                out[index] = out[index] * vector.scale.to(out.dtype)
        return out


@dataclass
class IA3Method(PatchedLayers):
    """IA³ slots over one base; layers are patched on first use and shared by every hub on that base."""

    name: str = "ia3"
    layer_class: ClassVar[type] = IA3Layer
    patch_attr: ClassVar[str] = _ATTR

    def prepare(self, config: dict[str, Any], tensors: dict[str, Any]) -> PreparedLayers:
        if config.get("modules_to_save"):
            raise InvalidAdapterError("IA³ adapters with modules_to_save are not served by the runtime")
        layers = {}
        for key, tensor in tensors.items():
            module_name = parse_key(key)
            if module_name is None:
                raise InvalidAdapterError(f"unsupported IA³ weight {key!r} (the runtime serves ia3_l vectors)")
            module = self.linear(module_name)
            feedforward = is_feedforward(tuple(tensor.shape))
            width = module.in_features if feedforward else module.out_features
            if tensor.numel() != width:
                raise IncompatibleBaseError(f"IA³ vector {key} has shape {tuple(tensor.shape)} but {module_name!r} has "
                                            f"{module.in_features} -> {module.out_features} features; it belongs to "
                                            "another base")
            layers[module_name] = IA3Vector(owned(tensor.reshape(-1), dtype=self._dtype, device=self._device),
                                            feedforward)
        if not layers:
            raise InvalidAdapterError("the IA³ adapter holds no ia3_l vectors")
        return PreparedLayers.of(layers)
