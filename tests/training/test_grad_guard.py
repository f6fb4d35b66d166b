"""QLoRA with evaluations on a CPU whose bitsandbytes packs 4-bit layers (forced on any CPU): gradients stay exact."""

from __future__ import annotations

import pytest
import torch

from adapterhub.base import quantized
from adapterhub.errors import TrainingError
from adapterhub.training import grad_guard, load_recipe
from adapterhub.training.checkpoint import trainable_state
from adapterhub.training.trainer import Trainer
from tests.helpers.packed_cpu import force_probe
from tests.helpers.recipes import tiny_recipe

pytest.importorskip("bitsandbytes")


def _run(tmp_path, model_dir, name):
    """Three steps of QLoRA on the tiny llama, validating after every step; the trainer after training."""
    raw = tiny_recipe(tmp_path / name, model_dir, base={"quantize": "nf4"},
                      training={"max_steps": 3, "eval_every": 1, "load_best": False},
                      output={"register_on_success": False})
    trainer = Trainer(load_recipe(raw), run_dir=tmp_path / name / "run", progress=False)
    trainer.setup()
    try:
        trainer.train()
    finally:
        trainer.cleanup()
    return trainer


def test_qlora_with_evaluations_trains_as_on_a_cpu_without_bf16(tmp_path, tiny_llama_dir, monkeypatch):
    """The packing CPU's run equals the unpacked reference to the bit: no layer packed at a validation, gradients
    reached every adapted layer at every step, and the guard checked them once."""
    force_probe(monkeypatch, False)
    reference = _run(tmp_path, tiny_llama_dir, "plain")
    force_probe(monkeypatch, True)
    packing = _run(tmp_path, tiny_llama_dir, "bf16")
    assert len(packing.history["validation"]) == 3 and packing.grad_guard.checked
    layers = dict(quantized.linear_4bit_layers(packing.peft_model))
    assert layers and not any(quantized.is_packed(layer) for layer in layers.values())
    assert all(grad_guard.gradient_reaches_input(layer) for layer in layers.values())
    expected, got = trainable_state(reference.peft_model), trainable_state(packing.peft_model)
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0, msg=name)
    lowest = next(name for name in expected if ".layers.0." in name and "lora_A" in name)
    initial = trainable_state(_setup_only(tmp_path, tiny_llama_dir).peft_model)[lowest]
    assert not torch.equal(got[lowest], initial)  # the lowest adapted layer learned after the validations too


def _setup_only(tmp_path, model_dir):
    raw = tiny_recipe(tmp_path / "init", model_dir, base={"quantize": "nf4"}, output={"register_on_success": False})
    trainer = Trainer(load_recipe(raw), run_dir=tmp_path / "init" / "run", progress=False)
    trainer.setup()
    trainer.cleanup()
    return trainer


def test_the_guard_stops_a_run_whose_4bit_layers_pack_anyway(tmp_path, tiny_llama_dir, monkeypatch):
    """A bitsandbytes that packs whatever the flag says: the first step after a validation stops the run, naming
    the CPU feature and the bitsandbytes version."""
    force_probe(monkeypatch, True)
    from adapterhub.base import loading

    for module in (loading, grad_guard):  # the flags stay as bitsandbytes set them from its probe
        monkeypatch.setattr(module, "set_cpu_packing", lambda model, allow: {})
    with pytest.raises(TrainingError, match=r"gradients do not reach the input of the 4-bit layer .*q_proj\.base_layer"
                                            r".*bitsandbytes \d+\.\d+.*avx512_bf16: present.*packed .*: yes"):
        _run(tmp_path, tiny_llama_dir, "packs")


def test_no_guard_without_4bit_layers(tiny_base):
    assert grad_guard.guard_4bit_gradients(tiny_base.model) is None
