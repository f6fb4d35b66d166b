"""LoRA (any rank and target set, rsLoRA, DoRA, lora_bias) served from per-layer slot storage.

Each targeted linear layer's ``forward`` is replaced once by a :class:`LoraLayer`:
it calls the original forward (plain, bf16/fp16, bitsandbytes 4-/8-bit alike)
and adds each row's delta from the slot the active :class:`~adapterhub.methods.rows.RowSlots`
assigns it. Nothing is traversed or re-allocated on a switch.

Per adapter and layer, with ``s = alpha / r`` (rsLoRA: ``alpha / sqrt(r)``)::

    delta(x) = x @ A.T @ B'.T + b'                   A: [r, in], B': [out, r] = s * B, b' = s * b
    DoRA:      g = m / ||W + s * B @ A||_row          (computed once at load, like PEFT's
               B' = g * s * B,  b' = g * s * b        forward does on every call)
               delta(x) += (g - 1) * (base(x) - bias)

which is PEFT's ``lora_B(lora_A(x)) * scaling`` (and its DoRA variant) with the
constants folded in. ``lora_dropout`` is the identity at inference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from ...errors import IncompatibleBaseError, InvalidAdapterError
from ...memory import NewStorage, OwnedViews, in_place, owned
from ..rows import routed
from ..checks import module_alpha
from ..serving import PatchedLayers, PreparedLayers
from .layer import LoraLayer, LoraWeights
from .spec import check_served_config, parse_key

_ATTR = "_adapterhub_lora_layer"
PreparedLora = PreparedLayers  # module name -> LoraWeights


@dataclass
class LoraMethod(PatchedLayers):
    """LoRA slots over one base; layers are patched on first use and shared by every hub on that base."""

    name: str = "lora"
    layer_class: ClassVar[type] = LoraLayer
    patch_attr: ClassVar[str] = _ATTR

    def __post_init__(self) -> None:
        self.bind(self.base.named_modules())  # under the names adapters use
        self.base.linear_shapes  # noqa: B018 - computed once per base here, not inside the first load's checks

    def prepare(self, config: dict[str, Any], tensors: dict[str, Any]) -> PreparedLora:
        check_served_config(config, where="the adapter")
        parts_by_module = _group_by_module(tensors)
        if not parts_by_module:
            raise InvalidAdapterError("the LoRA adapter holds no lora_A/lora_B weights")
        checked = [(name, self._checked(name, parts)) for name, parts in parts_by_module.items()]
        matrices = [parts[part] for _, (_, parts) in checked for part in ("A", "B")]
        place = (in_place if self._reuses(tensors, matrices) else
                 NewStorage(sum(matrix.numel() for matrix in matrices), dtype=self._dtype, device=self._device))
        layers = {module_name: self._prepare_layer(module_name, module, parts, config, place)
                  for module_name, (module, parts) in checked}
        return PreparedLora.of(layers)

    def _reuses(self, tensors: dict[str, Any], matrices: list[Any]) -> bool:
        """Whether the prepared weights can live in the memory ``tensors`` were read into (no new storage).

        Only for weights handed over in a buffer of their own (:class:`~adapterhub.memory.OwnedViews`), stored
        contiguous in float32 like a float32 base on the CPU.
        """
        import torch

        return (isinstance(tensors, OwnedViews) and self._dtype == torch.float32
                and self._device.type == "cpu"
                and all(m.dtype == torch.float32 and m.device.type == "cpu" and m.is_contiguous() for m in matrices))

    def _checked(self, module_name: str, parts: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """The linear layer ``module_name`` names, once its ``lora_A`` / ``lora_B`` are known to fit it."""
        module = self.linear(module_name)
        if "A" not in parts or "B" not in parts:
            raise InvalidAdapterError(f"the adapter lacks lora_A or lora_B weights for {module_name!r}")
        A, B = parts["A"], parts["B"]
        rank = A.shape[0]
        if tuple(A.shape) != (rank, module.in_features) or tuple(B.shape) != (module.out_features, rank):
            raise IncompatibleBaseError(
                f"shape mismatch at {module_name!r}: lora_A {tuple(A.shape)} and lora_B {tuple(B.shape)} do not fit "
                f"a linear layer of {module.in_features} -> {module.out_features} features; the adapter belongs to "
                "another base")
        return module, parts

    def _prepare_layer(self, module_name: str, module: Any, parts: dict[str, Any], config: dict[str, Any],
                       place: Any) -> LoraWeights:
        """One layer's weights; ``place`` stores ``A`` and ``B'`` (see :func:`~adapterhub.memory.written_into`)."""
        import torch

        A, B = parts["A"], parts["B"]
        rank = A.shape[0]
        scaling = _scaling(config, module_name, rank)
        gain: Any = scaling  # B' = gain * B, formed in float32: a number, or one per output row with DoRA
        dora_gain = None
        if config.get("use_dora"):
            if "magnitude" not in parts:
                raise InvalidAdapterError(f"use_dora is set but {module_name!r} has no lora_magnitude_vector")
            if "bias" in parts:
                raise InvalidAdapterError("DoRA together with lora_bias is not supported by the runtime")
            g = _dora_factor(module, A, B, parts["magnitude"], scaling, self._device)  # before A, B are placed
            gain = g * scaling
            dora_gain = owned(g - 1, dtype=self._dtype, device=self._device)
        bias = parts.get("bias")
        if bias is not None:
            bias = owned(bias.to(self._device, torch.float32) * gain, dtype=self._dtype, device=self._device)
        elif dora_gain is None and self._dtype == torch.float32 and not _power_of_two(scaling):
            # folded, a scaling like 5/4 would round once into B where PEFT rounds each output (2.5e-4 in logits)
            return LoraWeights(A=place(A), B=place(B), scale=scaling)
        return LoraWeights(A=place(A), B=place(B, gain), bias=bias, dora_gain=dora_gain)


def _group_by_module(tensors: dict[str, Any]) -> dict[str, dict[str, Any]]:
    modules: dict[str, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        parsed = parse_key(key)
        if parsed is None or parsed.part is None:
            what = "LoRA on embedding layers" if "lora_embedding" in key else "this weight"
            raise InvalidAdapterError(f"unsupported adapter weight {key!r} ({what} is not served by the runtime)")
        modules.setdefault(parsed.module, {})[parsed.part] = tensor
    return modules


def _scaling(config: dict[str, Any], module_name: str, rank: int) -> float:
    """PEFT's scaling: the alpha of the first matching ``alpha_pattern`` key, over r or sqrt(r)."""
    alpha = module_alpha(config, module_name, key="lora_alpha")
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def _power_of_two(value: float) -> bool:
    """Whether multiplying by ``value`` is exact in floating point (``2**k``, either sign).

    >>> _power_of_two(2.0), _power_of_two(0.25), _power_of_two(1.25)
    (True, True, False)
    """
    return value != 0 and math.frexp(abs(value))[0] == 0.5


def _dora_factor(module: Any, A: Any, B: Any, magnitude: Any, scaling: float, device: Any) -> Any:
    """DoRA's ``m / ||W + s B A||`` per output row, in float32 (PEFT computes it in the adapter's fp32)."""
    import torch

    weight = _dense_weight(module).to(device=device, dtype=torch.float32)
    lora_weight = B.to(device, torch.float32) @ A.to(device, torch.float32)
    norm = torch.linalg.norm(weight + scaling * lora_weight, dim=1)
    return magnitude.to(device, torch.float32) / norm


def _dense_weight(module: Any) -> Any:
    """The weight ``[out, in]`` the layer really applies.

    bitsandbytes layers are read by pushing the identity through their own
    forward: dequantising ``weight.data`` directly is wrong once bitsandbytes has
    repacked it for its CPU kernels (it does so on the first forward).
    """
    import torch

    weight = module.weight
    if type(weight).__name__ not in ("Params4bit", "Int8Params"):
        return weight
    dtype = getattr(module, "compute_dtype", None) or torch.float32
    eye = torch.eye(module.in_features, dtype=dtype, device=weight.device)
    with torch.no_grad(), routed(None):
        applied = module(eye).float()  # [in, out] = eye @ W.T + bias
    if module.bias is not None:
        applied = applied - module.bias.float()
    return applied.T
