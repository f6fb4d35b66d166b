"""Real PEFT adapters on the tiny llama, saved by plain PEFT, as fixtures for registry tests.

Its fixtures (``lora_dir``, ``prefix_dir``, ``three_layer_lora_dir``) are registered in ``tests/conftest.py``;
request them by name. ``save_lora`` / ``save_prefix``: ``from tests.helpers.peft_adapters import save_lora``.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def save_lora(base_dir: Path, out: Path, *, seed: int = 0, target_modules: tuple[str, ...] = ("q_proj", "v_proj"),
              rank: int = 4) -> Path:
    """A LoRA with random (non-zero) A and B, so it changes the logits; returns ``out``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir)
    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(target_modules), init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(out)
    return out


def save_prefix(base_dir: Path, out: Path, *, num_virtual_tokens: int = 4) -> Path:
    """A prefix-tuning adapter; returns ``out``."""
    from peft import PrefixTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir)
    config = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=num_virtual_tokens)
    get_peft_model(model, config).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def lora_dir(tiny_llama_dir, tmp_path_factory) -> Path:
    """LoRA (r=4, q_proj+v_proj) on the tiny llama, as plain PEFT saved it."""
    return save_lora(tiny_llama_dir, tmp_path_factory.mktemp("peft") / "lora")


@pytest.fixture(scope="session")
def prefix_dir(tiny_llama_dir, tmp_path_factory) -> Path:
    """Prefix tuning (4 virtual tokens) on the tiny llama, as plain PEFT saved it."""
    return save_prefix(tiny_llama_dir, tmp_path_factory.mktemp("peft") / "prefix")


@pytest.fixture(scope="session")
def three_layer_lora_dir(tmp_path_factory) -> Path:
    """A LoRA for a 3-layer tiny llama: its layer-2 modules do not exist in the 2-layer base."""
    from adapterhub.base.tiny import make_tiny_llama

    base_dir = make_tiny_llama(tmp_path_factory.mktemp("tiny-3-layers"), layers=3)
    return save_lora(base_dir, tmp_path_factory.mktemp("peft") / "lora-3-layers")
