"""Random PEFT adapters for tests and benchmarks (made with PEFT itself, saved as plain PEFT directories).

>>> from adapterhub.runtime.testing import make_random_adapters
>>> paths = make_random_adapters(base, "/tmp/adapters", count=8, r=16)  # doctest: +SKIP
>>> [p.name for p in paths][:2]  # doctest: +SKIP
['lora-0', 'lora-1']
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from .. import methods
from .._transformers import quiet_peft_wrapping

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def make_random_adapters(base: Any, out_dir: str | Path, count: int = 1, *, method: str = "lora", r: int = 8,
                         lora_alpha: float | None = None, target_modules: Sequence[str] = ALL_LINEAR,
                         use_rslora: bool = False, use_dora: bool = False, num_virtual_tokens: int = 8,
                         std: float | None = None, seed: int = 0, prefix: str | None = None,
                         **options: Any) -> list[Path]:
    """Save ``count`` adapters with random non-zero weights; returns their directories.

    Args:
        base: a :class:`adapterhub.base.Base`, a model directory or an alias.
        out_dir: parent directory; adapters go to ``<out_dir>/<prefix>-<i>``.
        count: how many (same config, different weights: seed ``seed + i``).
        method: any registered method; each reads the options it knows from the common ones below
            (its ``spec.random_config`` / ``random_model``: e.g. AdaLoRA's ``r`` is ``init_r``, with a random
            budget kept; IA³'s ``target_modules`` default k/v/down_proj; the bottleneck takes ``placement``,
            ``reduction_factor``, ``non_linearity`` as ``**options``).
        r, lora_alpha, target_modules, use_rslora, use_dora: low-rank options
            (``lora_alpha`` defaults to ``2 * r``).
        num_virtual_tokens: prefix length.
        std: weight scale (default: the method's ``noise_std``, e.g. 0.1 for LoRA, 1.0 for prefix key/values).
        prefix: directory name prefix (default: ``method``).
        **options: more PEFT config fields (``rank_pattern``, ``alpha_pattern``, ``lora_bias``, ...).

    >>> make_random_adapters("/tmp/tiny-llama", "/tmp/out", method="prefix")  # doctest: +SKIP
    [PosixPath('/tmp/out/prefix-0')]
    """
    import torch
    from transformers import AutoModelForCausalLM

    spec = methods.get(method)
    model = AutoModelForCausalLM.from_pretrained(_model_dir(base), dtype=torch.float32)
    common = {"r": r, "lora_alpha": lora_alpha, "target_modules": tuple(target_modules), "use_rslora": use_rslora,
              "use_dora": use_dora, "num_virtual_tokens": num_virtual_tokens,
              "all_linear": tuple(target_modules) == ALL_LINEAR}
    with torch.random.fork_rng(), quiet_peft_wrapping():  # PEFT's own init (e.g. DoRA magnitudes): seeded too
        torch.manual_seed(seed)
        peft_model = spec.random_model(model, common, options)
    out_dir = Path(out_dir)
    paths = []
    for index in range(count):
        spec.random_weights(peft_model, torch.Generator().manual_seed(seed + index), std)
        path = out_dir / f"{prefix or method}-{index}"
        if hasattr(peft_model, "adapter_state_dict"):  # adapterhub's own format (no PEFT save_pretrained)
            from safetensors.torch import save_file

            peft_model.active_peft_config.save_pretrained(str(path))
            save_file({k: v.contiguous() for k, v in peft_model.adapter_state_dict().items()},
                      str(path / "adapter_model.safetensors"), metadata={"format": "pt"})
        else:
            peft_model.save_pretrained(str(path))
        paths.append(path)
    return paths


def write_manifest(path: str | Path, *, name: str | None = None, domain: str | None = None,
                   task: Any = None, base: Any = None) -> Path:
    """Add a minimal ``adapterhub.json`` (name, domain, task, base fingerprint) beside a PEFT adapter.

    Enough for the runtime to read a plain directory; the registry writes complete manifests.
    """
    from ..prompts import TaskSpec

    path = Path(path)
    manifest = {"format": 1, "name": name or path.name, "domain": domain,
                "task": TaskSpec.from_dict(task).to_dict(),
                "base": {"fingerprint": getattr(base, "fingerprint", None),
                         "name": getattr(getattr(base, "spec", None), "name", None)}}
    (path / "adapterhub.json").write_text(json.dumps(manifest, indent=2))
    return path


def _model_dir(base: Any) -> str:
    spec = getattr(base, "spec", None)
    if spec is not None:
        return spec.path
    from ..base.loading import resolve

    return str(resolve(str(base))[1])


def load_peft(base: Any, adapter_dir: str | Path, *, quantize: str | None = None, dtype: str = "float32") -> Any:
    """Plain PEFT reference: a fresh copy of ``base`` with ``adapter_dir`` loaded alone, in eval mode.

    Args:
        base: a :class:`adapterhub.base.Base`, a model directory or an alias.
        adapter_dir: the PEFT adapter.
        quantize / dtype: as in :func:`adapterhub.base.load_base` (CPU).
    """
    from peft import PeftModel

    from ..base.loading import load_base

    fresh = load_base(_model_dir(base), quantize=quantize, dtype=dtype, device="cpu", progress=False)
    with quiet_peft_wrapping():
        return PeftModel.from_pretrained(fresh.model, str(adapter_dir)).eval()


ENCODER_LINEAR = ("query", "key", "value", "dense")


def encoder_task_model(base: Any, task_type: str, num_labels: int, *, dtype: str = "float32") -> Any:
    """A fresh ``AutoModelFor{Sequence,Token}Classification`` on ``base``'s weights (CPU, eval mode).

    Its head is randomly initialised; PEFT replaces it with the adapter's saved head.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    model_class = AutoModelForTokenClassification if task_type == "TOKEN_CLS" else AutoModelForSequenceClassification
    return model_class.from_pretrained(_model_dir(base), num_labels=num_labels, dtype=getattr(torch, dtype)).eval()


def make_random_encoder_adapters(base: Any, out_dir: str | Path, count: int = 1, *, task_type: str = "SEQ_CLS",
                                 labels: Sequence[str] = ("positive", "negative", "neutral"), r: int = 8,
                                 lora_alpha: float | None = None, target_modules: Sequence[str] = ENCODER_LINEAR,
                                 std: float = 0.1, seed: int = 0, prefix: str | None = None,
                                 **options: Any) -> list[Path]:
    """Save ``count`` random LoRA encoder adapters with their heads (plain PEFT + a minimal manifest).

    Args:
        base: an encoder :class:`adapterhub.base.Base` or its model directory.
        task_type: ``"SEQ_CLS"`` (``labels`` are the classes) or ``"TOKEN_CLS"`` (``labels`` are entity
            types; the head predicts ``O`` and ``B-``/``I-`` of each).
        r, lora_alpha, target_modules, **options: LoRA settings (``lora_alpha`` defaults to ``2 * r``).
        std: scale of the random LoRA weights (the head gets ``std`` too).

    >>> make_random_encoder_adapters(base, "/tmp/enc", task_type="TOKEN_CLS", labels=["DRUG"])  # doctest: +SKIP
    [PosixPath('/tmp/enc/token_cls-0')]
    """
    import torch
    from peft import LoraConfig, get_peft_model

    from ..prompts import TaskSpec

    task = TaskSpec(type="token_classification" if task_type == "TOKEN_CLS" else "sequence_classification",
                    labels=tuple(labels))
    model = encoder_task_model(base, task_type, len(task.head_labels))
    config = LoraConfig(task_type=task_type, r=r, lora_alpha=lora_alpha or 2 * r, target_modules=list(target_modules),
                        init_lora_weights=False, **options)
    peft_model = get_peft_model(model, config)
    paths = []
    for index in range(count):
        generator = torch.Generator().manual_seed(seed + index)
        with torch.no_grad():
            for name, parameter in peft_model.named_parameters():
                if parameter.requires_grad:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
        path = Path(out_dir) / f"{prefix or task_type.lower()}-{index}"
        peft_model.save_pretrained(str(path))
        write_manifest(path, task=task, base=base if hasattr(base, "fingerprint") else None)
        paths.append(path)
    return paths


def load_peft_encoder(base: Any, adapter_dir: str | Path, *, task_type: str, num_labels: int) -> Any:
    """Plain PEFT reference for an encoder adapter: ``PeftModel.from_pretrained(AutoModelFor...(base), dir)``."""
    from peft import PeftModel

    return PeftModel.from_pretrained(encoder_task_model(base, task_type, num_labels), str(adapter_dir)).eval()
