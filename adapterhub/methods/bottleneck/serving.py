"""Bottleneck adapters served per row: each row's adapter follows the layer it adapts.

For the rows of one adapter, after a targeted linear layer (``o_proj`` and/or
``down_proj``, see :mod:`adapterhub.methods.bottleneck`)::

    h = linear(x)                                  # [rows, ..., H]
    h = h + act(h @ down.T + b_down) @ up.T + b_up # down: [b, H], up: [H, b]

the computation of :class:`adapterhub.methods.bottleneck.model.Bottleneck` in
eval mode (no dropout). The linear layer's ``forward`` is replaced once by a
:class:`BottleneckLayer` that wraps whatever forward it finds, so LoRA and IA³
patches on the same layer chain with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ...errors import IncompatibleBaseError, InvalidAdapterError
from ...memory import owned, tensor_bytes
from ..serving import AddedLayer, PatchedLayers, PreparedLayers
from .config import BottleneckConfig, parse_key

_ATTR = "_adapterhub_bottleneck_layer"


@dataclass
class BottleneckWeights:
    """One adapter after one layer."""

    down: Any  # [b, H]
    down_bias: Any  # [b]
    up: Any  # [H, b]
    up_bias: Any  # [H]
    act: Any  # the non-linearity (a torch function)

    @property
    def nbytes(self) -> int:
        return tensor_bytes(self.down, self.down_bias, self.up, self.up_bias)

    def residual(self, h: Any) -> Any:
        """``up(act(down(h)))`` for ``h`` ``[..., H]``."""
        import torch.nn.functional as F

        return F.linear(self.act(F.linear(h, self.down, self.down_bias)), self.up, self.up_bias)

    def added(self, x: Any, out: Any) -> Any:
        """What the layer adds to ``out``: the residual of its own output."""
        return self.residual(out)


class BottleneckLayer(AddedLayer):
    """The replacement ``forward`` of one linear layer: each bottleneck row adds its adapter's residual."""


@dataclass
class BottleneckMethod(PatchedLayers):
    """Bottleneck slots over one base; layers are patched on first use and shared by every hub on that base."""

    name: str = "bottleneck"
    layer_class: ClassVar[type] = BottleneckLayer
    patch_attr: ClassVar[str] = _ATTR

    def prepare(self, config: dict[str, Any], tensors: dict[str, Any]) -> PreparedLayers:
        from .model import ACTIVATIONS

        try:
            parsed_config = BottleneckConfig.from_dict(config)
        except TypeError as error:
            raise InvalidAdapterError(f"not a valid bottleneck adapter_config.json ({error})") from None
        act = ACTIVATIONS[parsed_config.non_linearity]
        parts: dict[str, dict[str, Any]] = {}
        for key, tensor in tensors.items():
            parsed = parse_key(key)
            if parsed is None:
                raise InvalidAdapterError(f"unsupported bottleneck weight {key!r}")
            parts.setdefault(parsed[0], {})[f"{parsed[1]}.{parsed[2]}"] = tensor
        layers = {}
        for module_name, found in parts.items():
            module = self.linear(module_name, verb="follows")
            if set(found) != {"down.weight", "down.bias", "up.weight", "up.bias"}:
                raise InvalidAdapterError(f"the bottleneck at {module_name!r} has {sorted(found)}; it needs down/up "
                                          "weight and bias")
            down, up = found["down.weight"], found["up.weight"]
            size, width = int(down.shape[0]), module.out_features
            if tuple(down.shape) != (size, width) or tuple(up.shape) != (width, size):
                raise IncompatibleBaseError(f"bottleneck at {module_name!r}: down {tuple(down.shape)} and up "
                                            f"{tuple(up.shape)} do not fit its {width} output features")
            convert = {"dtype": self._dtype, "device": self._device}
            layers[module_name] = BottleneckWeights(down=owned(down, **convert),
                                                    down_bias=owned(found["down.bias"], **convert),
                                                    up=owned(up, **convert), up_bias=owned(found["up.bias"], **convert),
                                                    act=act)
        if not layers:
            raise InvalidAdapterError("the bottleneck adapter holds no weights")
        return PreparedLayers.of(layers)
