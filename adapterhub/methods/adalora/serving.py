"""AdaLoRA served through LoRA's per-layer slots: the same per-row low-rank delta, other constants.

PEFT computes, per layer and with ``ranknum = init_r`` (kept when the stored
rank is the budgeted one)::

    delta(x) = x @ (A * E).T @ B.T * scaling / (ranknum + 1e-5)      scaling = lora_alpha (or r when alpha <= 0)

so ``A' = A * E`` (``E`` ``[r, 1]`` scales the rows of ``A``) and
``B' = B * scaling / (ranknum + 1e-5)`` make it a plain LoRA pair, installed in
the very :class:`~adapterhub.methods.lora.layer.LoraLayer` that serves LoRA
rows: an AdaLoRA row and a LoRA row in one batch share each layer's patch.
Layers whose budget fell to rank 0 add nothing and are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...errors import IncompatibleBaseError, InvalidAdapterError
from ...memory import owned
from ..lora.layer import LoraWeights
from ..lora.serving import LoraMethod, PreparedLora
from .spec import parse_key


@dataclass
class AdaLoraMethod(LoraMethod):
    """AdaLoRA slots; shares LoRA's patched layers (see the module docstring)."""

    name: str = "adalora"

    def prepare(self, config: dict[str, Any], tensors: dict[str, Any]) -> PreparedLora:
        import torch

        if config.get("bias", "none") != "none":
            raise InvalidAdapterError(f"the adapter trains base biases (bias={config['bias']!r}), which the runtime "
                                      "does not serve; train it with bias='none'")
        init_r = config.get("init_r")
        if not init_r:
            raise InvalidAdapterError("the AdaLoRA adapter_config.json has no init_r; save it again with PEFT")
        modules: dict[str, dict[str, Any]] = {}
        for key, tensor in tensors.items():
            parsed = parse_key(key)
            if parsed is None:
                raise InvalidAdapterError(f"unsupported AdaLoRA weight {key!r} (the runtime serves lora_A/E/B)")
            modules.setdefault(parsed[0], {})[parsed[1]] = tensor
        layers = {}
        for module_name, parts in modules.items():
            if set(parts) != {"lora_A", "lora_B", "lora_E"}:
                raise InvalidAdapterError(f"the AdaLoRA adapter lacks lora_A, lora_E or lora_B for {module_name!r}")
            A, B, E = parts["lora_A"], parts["lora_B"], parts["lora_E"]
            rank = int(E.shape[0])
            if rank == 0:
                continue
            module = self.linear(module_name)
            if tuple(A.shape) != (rank, module.in_features) or tuple(B.shape) != (module.out_features, rank):
                raise IncompatibleBaseError(f"shape mismatch at {module_name!r}: lora_A {tuple(A.shape)}, lora_E "
                                            f"{tuple(E.shape)}, lora_B {tuple(B.shape)} do not fit a linear layer of "
                                            f"{module.in_features} -> {module.out_features}; it belongs to another base")
            alpha = config.get("lora_alpha", 8)
            factor = (alpha if alpha > 0 else rank) / (float(init_r) + 1e-5)
            A32 = A.to(self._device, torch.float32) * E.to(self._device, torch.float32).reshape(rank, 1)
            B32 = B.to(self._device, torch.float32) * factor
            layers[module_name] = LoraWeights(A=owned(A32, dtype=self._dtype, device=self._device),
                                              B=owned(B32, dtype=self._dtype, device=self._device))
        return PreparedLora.of(layers)
