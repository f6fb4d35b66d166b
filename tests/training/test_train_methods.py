"""AdaLoRA, IA³, LoHa and bottleneck adapters train from a recipe, register, evaluate the same after reload and serve."""

from __future__ import annotations

import json

import pytest
import torch

from adapterhub.errors import RecipeError
from adapterhub.registry import Registry
from adapterhub.training import load_recipe
from adapterhub.training.trainer import train
from tests.helpers.recipes import tiny_recipe

METHODS = {
    "adalora": {"method": "adalora", "init_r": 6, "target_r": 2, "tinit": 1, "tfinal": 2, "deltaT": 1},
    "ia3": {"method": "ia3"},
    "loha": {"method": "loha", "r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj", "down_proj"]},
    "bottleneck-houlsby": {"method": "bottleneck", "placement": "houlsby", "reduction_factor": 8},
    "bottleneck-pfeiffer": {"method": "bottleneck", "placement": "pfeiffer", "non_linearity": "gelu"},
}


@pytest.mark.parametrize("case", list(METHODS))
def test_method_trains_registers_and_reloads_to_the_same_scores(tmp_path, tiny_llama_dir, tiny_base, case):
    from adapterhub.runtime import AdapterHub
    from adapterhub.training.evaluate import evaluate_file

    adapter = METHODS[case]
    raw = tiny_recipe(tmp_path, tiny_llama_dir, adapter=adapter, training={"max_steps": 6, "lr": 5e-3})
    result = train(raw, progress=False)
    record = result.record
    assert record.method == adapter["method"]
    config = json.loads((record.path / "adapter_config.json").read_text())
    if case == "adalora":
        kept = [sum(mask) for mask in config["rank_pattern"].values()]
        assert config["rank_pattern"] and sum(kept) == 2 * len(kept)  # the final budget: target_r on average
        assert all(".default" not in key for key in config["rank_pattern"])  # as PEFT's save_pretrained writes it
    if adapter["method"] == "bottleneck":
        assert config["peft_type"] == "ADAPTERHUB_BOTTLENECK" and config["placement"] == adapter["placement"]
    registry = Registry(raw["output"]["registry"])
    reloaded = evaluate_file(record.ref, tmp_path / "validation.jsonl", registry=registry, base=tiny_base)
    validation = result.metrics["validation"]
    assert reloaded["accuracy"] == validation["accuracy"]
    assert reloaded["loss"] == pytest.approx(validation["loss"], abs=1e-4)
    assert not any(hasattr(m, "bottleneck") for m in tiny_base.model.modules()), "evaluation left the base as it was"
    with AdapterHub(tiny_base, registry=registry) as hub:  # the runtime's scores equal training's evaluation
        texts = ["Revenue rose and margins widened.", "Guidance was cut again."]
        from adapterhub.training.evaluate import label_score_matrix, load_peft_model

        got = hub.label_scores(texts, domain=record.name)
        model = load_peft_model(registry, record.ref, tiny_base)
        try:
            expected = label_score_matrix(model, tiny_base.tokenizer, record.task, texts)
        finally:
            model.unload()
        for row, scores in zip(expected.tolist(), got):
            assert list(scores.values()) == pytest.approx(row, abs=1e-4)


def test_adalora_schedule_must_leave_budgeting_steps(tmp_path, tiny_llama_dir):
    raw = tiny_recipe(tmp_path, tiny_llama_dir, adapter={"method": "adalora", "tinit": 3, "tfinal": 3},
                      training={"max_steps": 6})
    with pytest.raises(RecipeError, match="tinit"):
        load_recipe(raw)
    raw["training"] = {**raw["training"], "max_steps": None, "epochs": 1}  # 16 rows / 4 = 4 steps
    with pytest.raises(RecipeError, match="budgeting"):
        train(raw, progress=False)


def test_adalora_hook_allocates_and_regularises(tmp_path, tiny_llama_dir, monkeypatch):
    from peft.tuners.adalora import AdaLoraModel

    calls = []
    original = AdaLoraModel.update_and_allocate
    monkeypatch.setattr(AdaLoraModel, "update_and_allocate", lambda self, step: calls.append(step) or original(self, step))
    raw = tiny_recipe(tmp_path, tiny_llama_dir, adapter=METHODS["adalora"], training={"max_steps": 5})
    train(raw, progress=False)
    assert calls == [1, 2, 3, 4, 5]


def test_recipe_rejects_bad_bottleneck_options(tmp_path, tiny_llama_dir):
    raw = tiny_recipe(tmp_path, tiny_llama_dir, adapter={"method": "bottleneck", "placement": "sideways"})
    with pytest.raises(RecipeError, match="placement"):
        load_recipe(raw)


def test_bottleneck_starts_as_the_identity(tiny_llama_dir, tiny_base):
    from adapterhub.methods import build_trainable, get

    raw = tiny_recipe(tiny_llama_dir.parent / "unused", tiny_llama_dir, adapter={"method": "bottleneck"})
    model = build_trainable(get("bottleneck"), tiny_base.model, load_recipe(raw), tiny_base)
    ids = torch.arange(3, 12)[None]
    try:
        with torch.no_grad():
            adapted = model(input_ids=ids).logits
            with model.disable_adapter():
                bare = model(input_ids=ids).logits
        assert torch.equal(adapted, bare)
        assert all(t.requires_grad for t in model.parameters() if t.requires_grad) and \
            {n.split(".bottleneck.")[-1] for n, p in model.named_parameters() if p.requires_grad} == \
            {"down.weight", "down.bias", "up.weight", "up.bias"}
    finally:
        model.unload()


def test_loha_recipe_lists_only_its_options_and_refuses_a_quantized_base(tmp_path, tiny_llama_dir):
    raw = tiny_recipe(tmp_path, tiny_llama_dir, adapter={"method": "loha", "use_dora": True})
    with pytest.raises(RecipeError, match=r"unknown key 'adapter.use_dora'; known keys: method, r, alpha, rank_dropout"):
        load_recipe(raw)
    raw = tiny_recipe(tmp_path, tiny_llama_dir, adapter={"method": "loha"}, base={"quantize": "nf4"})
    with pytest.raises(RecipeError, match="'loha' trains on full-precision linear layers only"):
        load_recipe(raw)


def test_registry_and_runtime_refuse_the_same_loha_files(tmp_path, tiny_base):
    """One check (the method's spec) for both: a LoHa adapter missing a factor fails to register and to load."""
    from safetensors.torch import load_file, save_file

    from adapterhub.errors import InvalidAdapterError
    from adapterhub.runtime import AdapterHub
    from adapterhub.runtime.testing import make_random_adapters

    path = make_random_adapters(tiny_base, tmp_path, method="loha", r=2, target_modules=["q_proj"])[0]
    weights = load_file(str(path / "adapter_model.safetensors"))
    save_file({k: v for k, v in weights.items() if not k.endswith("hada_w2_b")}, str(path / "adapter_model.safetensors"))
    with pytest.raises(InvalidAdapterError, match="exactly hada_w1_a, hada_w1_b, hada_w2_a, hada_w2_b"):
        Registry(tmp_path / "registry").add(path, "odd", base=tiny_base)
    with AdapterHub(tiny_base) as hub, pytest.raises(InvalidAdapterError, match="exactly hada_w1_a"):
        hub.load(path)
