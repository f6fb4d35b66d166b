"""Force bitsandbytes' CPU feature probe, so any CI machine takes the packed bf16 path of 4-bit layers."""

from __future__ import annotations


def force_probe(monkeypatch, answer: bool) -> None:
    """Make bitsandbytes (and adapterhub) see a CPU with (True) or without (False) AVX512-BF16.

    Each ``Linear4bit`` copies the probe's answer into its ``support_avx512bf16_for_cpu`` flag when it is built,
    so force it before loading the base.
    """
    import bitsandbytes.functional
    import bitsandbytes.nn.modules

    monkeypatch.setattr(bitsandbytes.functional, "has_avx512bf16", lambda: answer)
    monkeypatch.setattr(bitsandbytes.nn.modules, "has_avx512bf16", lambda: answer)
