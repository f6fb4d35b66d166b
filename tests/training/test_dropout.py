"""Sparse dropout: the distribution of nn.Dropout (rate, spread, independence), cheaper draws, swapped into LoRA."""

from __future__ import annotations

import math

import pytest
import torch

from adapterhub.training.dropout import SparseDropout, dropout_mask, use_sparse_dropout


@pytest.mark.parametrize("p", [0.01, 0.05, 0.1, 0.25])
def test_each_element_drops_with_probability_p_independently(p):
    torch.manual_seed(0)
    n, draws = 10_000, 100
    masks = torch.stack([dropout_mask(n, p) for _ in range(draws)])
    assert set(masks.unique().tolist()) <= {0.0, torch.tensor(1.0 / (1.0 - p)).item()}  # float32
    dropped = (masks == 0).double()
    rates = dropped.mean(dim=1)
    assert abs(rates.mean().item() - p) < 4 * math.sqrt(p * (1 - p) / (n * draws))  # the rate
    assert rates.std().item() == pytest.approx(math.sqrt(p * (1 - p) / n), rel=0.25)  # binomial spread
    per_position = dropped.mean(dim=0)  # no position favoured (the end of the mask included)
    assert per_position[-2000:].mean().item() == pytest.approx(p, abs=4 * math.sqrt(p / (2000 * draws)))
    neighbours = (dropped[:, 1:] * dropped[:, :-1]).mean().item()  # P(both dropped) = p^2: independent
    assert neighbours == pytest.approx(p * p, abs=4 * math.sqrt(p * p / ((n - 1) * draws)))


def test_the_module_is_dropout_in_training_and_identity_in_eval():
    torch.manual_seed(0)
    x = torch.randn(64, 300, requires_grad=True)
    layer = SparseDropout(0.1)
    out = layer(x)
    kept = out != 0
    assert torch.allclose(out[kept], x[kept] / 0.9)
    out.sum().backward()
    assert torch.allclose(x.grad, kept.float() / 0.9)  # gradient flows through the survivors only
    assert layer.eval()(x) is x
    assert SparseDropout(0.0).train()(x) is x
    with pytest.raises(ValueError, match="dropout probability"):
        SparseDropout(1.0)


def test_lora_layers_get_sparse_dropout_and_save_the_same(tiny_base, tmp_path):
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file

    model = get_peft_model(tiny_base.model, LoraConfig(r=4, lora_dropout=0.05, target_modules="all-linear"))
    try:
        model.save_pretrained(tmp_path / "before")
        replaced = use_sparse_dropout(model)
        assert replaced == sum(1 for name, _ in model.named_modules() if name.endswith("lora_dropout.default"))
        assert replaced > 0
        model.save_pretrained(tmp_path / "after")
        before = load_file(tmp_path / "before" / "adapter_model.safetensors")
        after = load_file(tmp_path / "after" / "adapter_model.safetensors")
        assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
        assert (tmp_path / "before" / "adapter_config.json").read_text() == \
            (tmp_path / "after" / "adapter_config.json").read_text()
    finally:
        model.unload()
