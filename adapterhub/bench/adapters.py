"""Adapters made for the benchmark: random, non-zero LoRA weights in plain PEFT folders.

Speed and memory do not depend on what an adapter learned, only on its shapes,
so the bench writes its own: LoRA rank ``r`` on every linear layer except the
LM head (PEFT's ``all-linear``), ``lora_alpha = 2r``, weights drawn from a
seeded generator and small enough to leave the base's outputs sane. Each folder
is what ``PeftModel.save_pretrained`` writes, so plain PEFT and our registry
both read it.

>>> adapters = make_adapters(base, "~/.cache/adapterhub/bench/adapters", count=8)  # doctest: +SKIP
>>> adapters[0].name, adapters[0].file_bytes  # doctest: +SKIP
('bench-00', 19546112)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Collection

_DELTA_SCALE = 0.02  # the LoRA delta's size relative to the layer input (keeps generations finite)


@dataclass(frozen=True)
class BenchAdapter:
    """One generated adapter.

    Attributes:
        name: also its domain (``bench-00``, ``bench-01``, ...).
        path: the PEFT folder.
        file_bytes: size of ``adapter_model.safetensors``.
        ref: registry reference once registered, else ``None``.
    """

    name: str
    path: Path
    file_bytes: int
    ref: str | None = None


def lora_targets(base: Any) -> dict[str, tuple[int, int]]:
    """``{module_name: (in, out)}`` of the linear layers an all-linear LoRA adapts (all but the LM head)."""
    output = base.model.get_output_embeddings()
    skip = {name for name, module in base.model.named_modules() if module is output}
    return {name: shape for name, shape in base.linear_shapes.items() if name not in skip}


def write_lora_adapter(base: Any, path: str | Path, *, rank: int = 16, seed: int = 0,
                       modules: Collection[str] | None = None) -> Path:
    """Write one random LoRA adapter for ``base`` as a PEFT folder and return its path.

    Args:
        base: a loaded :class:`adapterhub.Base` (its linear shapes decide the tensors).
        path: the folder to write (created).
        rank: LoRA rank.
        seed: weights are a pure function of the seed and the shapes.
        modules: adapt only linear layers whose last name part is one of these (e.g. ``{"q_proj", "v_proj"}``);
            ``None``: every linear layer but the LM head.
    """
    import torch
    from peft import LoraConfig
    from safetensors.torch import save_file

    targets = {name: shape for name, shape in lora_targets(base).items()
               if modules is None or name.rsplit(".", 1)[-1] in modules}
    if not targets:
        raise ValueError(f"the base has no linear layer named {sorted(modules or ())}")
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for name, (in_features, out_features) in sorted(targets.items()):
        prefix = f"base_model.model.{name}"
        down = torch.randn(rank, in_features, generator=generator) / math.sqrt(in_features)
        tensors[f"{prefix}.lora_A.weight"] = down
        tensors[f"{prefix}.lora_B.weight"] = torch.randn(out_features, rank, generator=generator) * (
            _DELTA_SCALE / math.sqrt(rank))
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, task_type="CAUSAL_LM",
                        target_modules=sorted({name.rsplit(".", 1)[-1] for name in targets}),
                        base_model_name_or_path=base.spec.name)
    config.save_pretrained(str(path))
    partial = path / "adapter_model.safetensors.partial"
    save_file(tensors, str(partial), metadata={"format": "pt"})
    os.replace(partial, path / "adapter_model.safetensors")  # complete or absent, never half-written
    return path


def make_adapters(base: Any, root: str | Path, *, count: int, rank: int = 16) -> list[BenchAdapter]:
    """``count`` adapters named ``bench-00``.. for ``base``, reused when already written.

    Args:
        base: the base they adapt.
        root: their parent folder; each base and rank gets its own subfolder.
        count: how many.
        rank: LoRA rank.
    """
    folder = Path(root) / f"{base.fingerprint}-r{rank}"
    adapters = []
    for index in range(count):
        name = f"bench-{index:02d}"
        path = folder / name
        if not (path / "adapter_model.safetensors").is_file():
            write_lora_adapter(base, path, rank=rank, seed=index)
        file_bytes = (path / "adapter_model.safetensors").stat().st_size
        adapters.append(BenchAdapter(name=name, path=path, file_bytes=file_bytes))
    return adapters


def register_adapters(adapters: list[BenchAdapter], registry: Any, *, base: Any) -> list[BenchAdapter]:
    """Add each adapter to ``registry`` (checked against ``base``) and return them with their refs.

    Args:
        adapters: from :func:`make_adapters`.
        registry: an :class:`adapterhub.registry.Registry`.
        base: the base they were made for (the registry records its fingerprint).
    """
    registered = []
    for adapter in adapters:
        record = registry.add(adapter.path, adapter.name, domain=adapter.name, base=base, tags=("bench",),
                              description="random LoRA written by `adapterhub bench`")
        registered.append(replace(adapter, ref=record.ref))
    return registered
