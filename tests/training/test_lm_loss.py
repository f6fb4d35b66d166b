"""The supervised-positions-only loss equals PEFT's full forward, for LoRA (padded, packed) and prefix tuning."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from adapterhub.training.batching import collate
from adapterhub.training.examples import IGNORE, Example
from adapterhub.training.lm_loss import SupervisedLM, batch_inputs


def _examples(common: int = 0) -> list[Example]:
    """Four examples; the first ``common`` tokens are the same in all of them (a shared prompt start)."""
    generator = torch.Generator().manual_seed(1)
    start = torch.randint(3, 300, (common,), generator=generator).tolist()
    examples = []
    for length, answer in [(7, 2), (12, 3), (5, 1), (9, 4)]:
        ids = start + torch.randint(3, 300, (length,), generator=generator).tolist()
        examples.append(Example(tuple(ids), tuple([IGNORE] * (len(ids) - answer) + ids[len(ids) - answer:])))
    return examples


def _reference_loss(peft_model, examples) -> tuple[torch.Tensor, int]:
    """Summed token loss from PEFT's own forward (full logits at every position, one example at a time)."""
    total = torch.zeros(())
    for example in examples:
        logits = peft_model(input_ids=torch.tensor([example.input_ids])).logits[0, -len(example):]
        labels = torch.tensor(example.labels)
        total = total + F.cross_entropy(logits[:-1].float(), labels[1:], ignore_index=IGNORE, reduction="sum")
    return total


CONFIGS = {
    "lora": lambda: __import__("peft").LoraConfig(r=4, target_modules="all-linear", lora_dropout=0.0,
                                                    init_lora_weights=False),
    "dora": lambda: __import__("peft").LoraConfig(r=4, target_modules=["q_proj", "v_proj"], use_dora=True,
                                                    init_lora_weights=False),
    "prefix": lambda: __import__("peft").PrefixTuningConfig(num_virtual_tokens=5, task_type="CAUSAL_LM"),
    "prefix-projection": lambda: __import__("peft").PrefixTuningConfig(
        num_virtual_tokens=3, task_type="CAUSAL_LM", prefix_projection=True, encoder_hidden_size=16),
}


CASES = [  # (method, layout); packing is LoRA-only (the recipe rejects prefix + packing)
    ("lora", "padded"), ("lora", "packed"), ("lora", "shared"), ("lora", "shared-apart"), ("dora", "padded"),
    ("dora", "packed"), ("prefix", "padded"), ("prefix", "shared"), ("prefix", "shared-apart"),
    ("prefix-projection", "padded"),
]
LAYOUTS = {"padded": {}, "packed": {"pack_length": 30}, "shared": {"share_prefix": True},
           "shared-apart": {"share_prefix": True}}  # apart: the start as its own pass (a model the packed pass
# does not know), else in one packed pass with the rows


@pytest.mark.parametrize("method, layout", CASES)
def test_supervised_loss_and_gradients_match_peft_forward(tiny_llama_dir, method, layout, monkeypatch):
    from peft import get_peft_model

    from adapterhub import load_base
    from adapterhub.training import lm_loss

    torch.manual_seed(0)
    peft_model = get_peft_model(load_base(str(tiny_llama_dir), device="cpu").model, CONFIGS[method]())
    examples = _examples(common=5)
    batch = collate(examples, pad_id=0, **LAYOUTS[layout])
    assert (batch.shared_prefix is not None) == layout.startswith("shared")
    packed = []
    monkeypatch.setattr(lm_loss, "packable", lambda body: packed.append(layout == "shared") or packed[-1])
    ours = SupervisedLM(peft_model)(**batch_inputs(batch))
    ours.backward()
    assert packed == ([layout == "shared"] if layout.startswith("shared") else [])
    ours_grads = [p.grad.clone() for p in peft_model.parameters() if p.requires_grad]
    peft_model.zero_grad()
    reference = _reference_loss(peft_model, examples)
    reference.backward()
    assert ours.item() == pytest.approx(reference.item(), rel=1e-5)
    for mine, theirs in zip(ours_grads, (p.grad for p in peft_model.parameters() if p.requires_grad)):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)


def test_prefix_from_text_behaves_like_that_text_in_context(tiny_llama_dir):
    from peft import PrefixTuningConfig, get_peft_model

    from adapterhub import load_base
    from adapterhub.methods.prefix import init_prefix_from_text

    base = load_base(str(tiny_llama_dir), device="cpu")
    text_ids = base.tokenizer("Classify the clause.", add_special_tokens=False)["input_ids"]
    inputs = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.no_grad():
        in_context = base.model(input_ids=torch.cat([torch.tensor([text_ids]), inputs], dim=1)).logits[:, len(text_ids):]
    peft_model = get_peft_model(base.model, PrefixTuningConfig(num_virtual_tokens=len(text_ids), task_type="CAUSAL_LM"))
    init_prefix_from_text(peft_model, base.tokenizer, "Classify the clause.")
    with torch.no_grad():
        prefixed = peft_model(input_ids=inputs, attention_mask=torch.ones_like(inputs)).logits
    torch.testing.assert_close(prefixed, in_context, rtol=1e-4, atol=1e-4)


def test_packed_pass_only_for_attention_it_knows(tiny_llama_dir):
    from types import SimpleNamespace

    from adapterhub import load_base
    from adapterhub.training.packed_prefix import packable

    assert packable(load_base(str(tiny_llama_dir), device="cpu").model.get_decoder())

    def body(**config):
        return SimpleNamespace(config=SimpleNamespace(**config))

    assert not packable(body(model_type="gpt2"))
    assert not packable(body(model_type="mistral", sliding_window=4096))
    assert packable(body(model_type="qwen2", sliding_window=4096, use_sliding_window=False))
