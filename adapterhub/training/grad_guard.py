"""Training on a 4-bit base: no layer may pack for bitsandbytes' bf16 CPU kernel, and gradients are checked once.

bitsandbytes 0.50 packs a ``Linear4bit`` for good at its first eval-mode, no-grad forward on a CPU with
AVX512-BF16 (see :mod:`adapterhub.base.quantized`); a packed layer passes no gradient to its input, so
from the first validation on only the adapter weights next to the loss would learn. :func:`guard_4bit_gradients`
forbids packing on every 4-bit layer of the trainable model (unpacking any already packed) and installs a
one-shot check: at the first training forward after the model ran in eval mode — where packing would have
happened — it runs the first adapted 4-bit layer on a probe input that requires grad and compares the
gradient reaching that input with ``g @ W`` from the dequantised weight. If it does not arrive, training
stops with a :class:`~adapterhub.errors.TrainingError` naming the CPU feature and the bitsandbytes version.

>>> guard = guard_4bit_gradients(peft_model)  # doctest: +SKIP
>>> guard.layer_name  # doctest: +SKIP
'base_model.model.model.layers.0.self_attn.q_proj.base_layer'
"""

from __future__ import annotations

import warnings
from typing import Any

from ..base.quantized import (CPU_FEATURE, bitsandbytes_version, cpu_packs_4bit, is_packed, linear_4bit_layers,
                              set_cpu_packing)
from ..errors import TrainingError


class GradientGuard:
    """The one-shot gradient check on one 4-bit layer (see the module docstring); :meth:`check` runs it now."""

    def __init__(self, name: str, layer: Any):
        self.layer_name, self.layer = name, layer
        self.checked = False
        self._saw_eval = False
        self._handle = layer.register_forward_pre_hook(self._before_forward)

    def _before_forward(self, module: Any, args: Any) -> None:
        if not module.training:
            self._saw_eval = True
        elif self._saw_eval and not self.checked:
            self.check()

    def check(self) -> None:
        """Check that gradients reach the layer's input; raise :class:`TrainingError` if they do not.

        Raises:
            TrainingError: no gradient, or one that differs from ``g @ W`` of the dequantised weight.
        """
        self.close()
        self.checked = True
        if not gradient_reaches_input(self.layer):
            raise TrainingError(
                f"gradients do not reach the input of the 4-bit layer {self.layer_name} after an evaluation "
                f"(bitsandbytes {bitsandbytes_version()}, CPU feature {CPU_FEATURE}: "
                f"{'present' if cpu_packs_4bit() else 'absent'}; layer packed for the bf16 kernel: "
                f"{'yes' if is_packed(self.layer) else 'no'}): the adapter weights below it would stop learning, "
                "so training stopped and nothing was registered. Fix: install a bitsandbytes whose Linear4bit "
                "honours support_avx512bf16_for_cpu=False (0.50.x does), or train on an unquantised base "
                "(--set base.quantize=null) and serve it on NF4")

    def close(self) -> None:
        """Remove the hook (idempotent)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


def guard_4bit_gradients(model: Any) -> GradientGuard | None:
    """Forbid packing on ``model``'s 4-bit layers and arm the one-shot check; ``None`` without 4-bit layers.

    Args:
        model: the trainable model (a PEFT model over a quantised base, or a task model).

    Returns:
        The armed :class:`GradientGuard` on the first adapted 4-bit layer (the first 4-bit layer when no
        linear layer is adapted, e.g. prefix tuning), or ``None``.
    """
    set_cpu_packing(model, False)
    layers = list(linear_4bit_layers(model))
    if not layers:
        return None
    name, layer = next(((n, m) for n, m in layers if ".base_layer" in n), layers[0])
    return GradientGuard(name, layer)


def gradient_reaches_input(layer: Any, *, rows: int = 2) -> bool:
    """Whether a backward through ``layer`` (a ``Linear4bit``, in its current state) gives its input ``g @ W``."""
    import torch

    weight = layer.weight
    dtype = layer.compute_dtype or torch.float32
    was_set, was_dtype = layer.compute_type_is_set, layer.compute_dtype
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(rows, layer.in_features, generator=generator).to(weight.device, dtype).requires_grad_()
    g = torch.randn(rows, layer.out_features, generator=generator).to(weight.device, dtype)
    try:
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*autograd kernel was not registered")  # the error says it
            y = layer(x)
            if not y.requires_grad:
                return False
            (grad,) = torch.autograd.grad(y, x, grad_outputs=g.to(y.dtype), allow_unused=True)
    finally:
        layer.compute_type_is_set, layer.compute_dtype = was_set, was_dtype
    if grad is None or not bool(torch.isfinite(grad).all()):
        return False
    if is_packed(layer):
        return True  # a future packed kernel with autograd: its bf16 gradient has no fp32 reference here
    from bitsandbytes.functional import dequantize_4bit

    expected = g.float() @ dequantize_4bit(weight.data, weight.quant_state).float()
    tolerance = 1e-2 if dtype == torch.float32 else 5e-2
    return bool(torch.allclose(grad.float(), expected, rtol=tolerance, atol=tolerance * float(expected.abs().mean())))
