"""Tiny PEFT adapters for tests: made with plain PEFT on the tiny llama, compared by logits."""

from __future__ import annotations

from pathlib import Path

PROBE_IDS = [[5, 17, 42, 7, 99, 3]]


def make_lora_adapter(base_dir: Path, out_dir: Path, *, seed: int = 0, r: int = 4) -> Path:
    """Save a LoRA adapter with random (non-zero) A and B on the tiny llama to ``out_dir``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir)
    torch.manual_seed(seed)
    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                        task_type="CAUSAL_LM")
    get_peft_model(model, config).save_pretrained(out_dir, safe_serialization=True)
    return Path(out_dir)


def adapter_logits(base_dir: Path, adapter_dir: Path):
    """Logits of the tiny llama with the adapter in ``adapter_dir`` loaded by plain PEFT."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), str(adapter_dir)).eval()
    with torch.no_grad():
        return model(torch.tensor(PROBE_IDS)).logits
