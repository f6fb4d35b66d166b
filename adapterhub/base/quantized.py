"""Which bitsandbytes CPU kernel a 4-bit base uses: packed bf16 or unpacked, chosen here, never by accident.

On a CPU with AVX512-BF16 (bitsandbytes' own probe, ``has_avx512bf16``), bitsandbytes 0.50's
``Linear4bit.forward`` repacks a layer's weight **in place and for good** the first time it runs in eval
mode on an input that does not require grad: the layout of ``_convert_weight_packed_for_cpu``, its
constants in bfloat16, computed by the ``gemv_4bit`` op in bf16. That op has no autograd kernel, so a
packed layer passes no gradient to its input; and widths the packer cannot lay out (out features not a
multiple of 32, in features not a multiple of the quantisation block) fail there with
``N must be divisible by block_n`` or a reshape error. Without the feature every forward dequantises to
the compute dtype (``"unpacked"``), and gradients flow.

Each ``Linear4bit`` carries the probe's answer as its own flag (``support_avx512bf16_for_cpu``); this module
sets that flag per layer, so nothing global in bitsandbytes changes:

* :func:`set_cpu_packing` — allow the packed kernel (serving's fast path, ``load_base``'s default, only where
  the widths allow it) or forbid it (training; ``load_base(..., packed_4bit=False)``), unpacking any layer
  that packed already;
* :func:`kernel_path` — the path a model's 4-bit layers take now (``base info`` and ``bench`` print it).

>>> base = load_base("smollm2-135m-instruct", quantize="nf4")  # doctest: +SKIP
>>> kernel_path(base.model)  # doctest: +SKIP
'packed-bf16'
"""

from __future__ import annotations

from typing import Any, Iterator

CPU_FEATURE = "avx512_bf16"
"""The CPU feature (``/proc/cpuinfo`` flag) under which bitsandbytes packs 4-bit weights for bf16 compute."""
PACK_BLOCK_N = 32
"""Output features are packed in blocks of this many rows (``_convert_weight_packed_for_cpu``'s ``block_n``)."""
_FLAG = "support_avx512bf16_for_cpu"


def bitsandbytes_version() -> str:
    """The installed bitsandbytes version, or ``"not installed"``."""
    try:
        import bitsandbytes
    except ImportError:
        return "not installed"
    return str(getattr(bitsandbytes, "__version__", "unknown"))


def cpu_packs_4bit() -> bool:
    """Whether bitsandbytes would pack 4-bit layers on this CPU (its own ``has_avx512bf16`` probe)."""
    try:
        from bitsandbytes.functional import has_avx512bf16
    except ImportError:
        return False
    return bool(has_avx512bf16())


def linear_4bit_layers(model: Any) -> Iterator[tuple[str, Any]]:
    """``(name, module)`` of every bitsandbytes ``Linear4bit`` in ``model`` (none without bitsandbytes)."""
    try:
        from bitsandbytes.nn import Linear4bit
    except ImportError:
        return
    for name, module in model.named_modules():
        if isinstance(module, Linear4bit):
            yield name, module


def can_pack(module: Any) -> bool:
    """Whether the packer can lay out this ``Linear4bit``'s weight (its widths, its quantisation block)."""
    state = getattr(module.weight, "quant_state", None)
    blocksize = int(getattr(state, "blocksize", 64) or 64)
    out_features, in_features = int(module.out_features), int(module.in_features)
    return out_features % PACK_BLOCK_N == 0 and in_features % blocksize == 0 and in_features % 2 == 0


def is_packed(module: Any) -> bool:
    """Whether this ``Linear4bit``'s weight is in the packed bf16 layout now."""
    return bool(getattr(getattr(module.weight, "quant_state", None), "packing_format_for_cpu", False))


def unpack(module: Any) -> bool:
    """Put a packed ``Linear4bit`` back in bitsandbytes' ordinary layout; returns whether it was packed.

    The inverse restores the same 4-bit codes; the block constants come back through bf16 (their packed
    dtype), so they may differ from the originals in the last bits of a float32.
    """
    if not is_packed(module):
        return False
    from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

    data, state = _convert_weight_packed_for_cpu_inverse(module.weight.data, module.weight.quant_state)
    module.weight.data, module.weight.quant_state = data, state
    if getattr(module, "quant_state", None) is not None:
        module.quant_state = state
    return True


def set_cpu_packing(model: Any, allow: bool) -> dict[str, int]:
    """Allow or forbid bitsandbytes' packed CPU kernel on every 4-bit layer of ``model``.

    Args:
        model: any ``torch.nn.Module`` (a base, a PEFT model over one, a task model).
        allow: ``True``: layers whose widths the packer takes may pack at their first eval-mode forward
            (only where this CPU has AVX512-BF16); the others stay unpacked. ``False``: no layer packs,
            and layers packed already are unpacked now.

    Returns:
        ``{"layers": 4-bit layers, "may_pack": layers allowed to pack, "unpacked": layers unpacked now}``.

    >>> set_cpu_packing(base.model, False)  # doctest: +SKIP
    {'layers': 210, 'may_pack': 0, 'unpacked': 0}
    """
    feature = cpu_packs_4bit()
    counts = {"layers": 0, "may_pack": 0, "unpacked": 0}
    for _, module in linear_4bit_layers(model):
        packable = bool(allow and feature and can_pack(module))
        setattr(module, _FLAG, packable)
        counts["layers"] += 1
        counts["may_pack"] += packable
        if not allow:
            counts["unpacked"] += unpack(module)
    return counts


def kernel_path(model: Any) -> str | None:
    """The bitsandbytes kernel ``model``'s 4-bit layers take on the CPU, in words; ``None`` without any.

    ``"unpacked"``: every forward dequantises the weight to the compute dtype (gradients flow);
    ``"packed-bf16"``: layers are (or will be, at their first eval-mode forward) packed and computed in bf16
    on the AVX512-BF16 kernel — ``"packed-bf16 (k of n layers)"`` when some widths cannot be packed;
    ``"gpu"``: the layers are not on the CPU (bitsandbytes' GPU kernels).
    """
    layers = list(linear_4bit_layers(model))
    if not layers:
        return None
    if all(module.weight.device.type != "cpu" for _, module in layers):
        return "gpu"
    packing = sum(1 for _, module in layers if is_packed(module) or getattr(module, _FLAG, False))
    if not packing:
        return "unpacked"
    return "packed-bf16" if packing == len(layers) else f"packed-bf16 ({packing} of {len(layers)} layers)"
