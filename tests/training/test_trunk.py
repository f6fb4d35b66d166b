"""The frozen trunk: LoRA on the last layers computes what the whole model computes, running the frozen layers once."""

from __future__ import annotations

import pytest
import torch

from adapterhub.training.batching import collate
from adapterhub.training.lm_loss import SupervisedLM, batch_inputs
from adapterhub.training.trunk import FrozenTrunk, attach_states, frozen_depth

from adapterhub.prompts import TaskSpec
from adapterhub.training.evaluate import label_score_matrix

from test_lm_loss import _examples

_TASK = TaskSpec(type="classification", labels=("positive", "negative", "no opinion"), chat=False,
                 prompt_template="Sentiment: {text}\n")
_TEXTS = ["Revenue rose and margins widened.", "The bank cut jobs.", "Guidance was cut again after a weak quarter."]


def _last_layer_lora(tiny_llama_dir, **options):
    from peft import LoraConfig, get_peft_model

    from adapterhub import load_base

    torch.manual_seed(0)
    base = load_base(str(tiny_llama_dir), device="cpu")
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], layers_to_transform=[1],
                        lora_dropout=0.0, init_lora_weights=False, **options)
    return base, get_peft_model(base.model, config)


class _Calls:
    """Counts forwards of the first decoder layer (the frozen one)."""

    def __init__(self, model):
        self.count = 0
        model.get_base_model().get_decoder().layers[0].register_forward_hook(self._seen)

    def _seen(self, *args):
        self.count += 1


def test_depth_is_the_layers_below_the_first_adapted_one(tiny_llama_dir):
    from peft import LoraConfig, PrefixTuningConfig, get_peft_model

    from adapterhub import load_base

    _, peft_model = _last_layer_lora(tiny_llama_dir)
    assert frozen_depth(peft_model) == 1
    every = get_peft_model(load_base(str(tiny_llama_dir), device="cpu").model, LoraConfig(r=4, target_modules="all-linear"))
    assert frozen_depth(every) == 0 and FrozenTrunk.of(every, budget_mb=100) is None
    prefix = get_peft_model(load_base(str(tiny_llama_dir), device="cpu").model,
                            PrefixTuningConfig(num_virtual_tokens=3, task_type="CAUSAL_LM"))
    assert frozen_depth(prefix) == 0
    assert FrozenTrunk.of(peft_model, budget_mb=0) is None


def test_attention_dropout_in_the_trunk_means_no_trunk(tiny_llama_dir):
    _, peft_model = _last_layer_lora(tiny_llama_dir)
    peft_model.get_base_model().config.attention_dropout = 0.1
    assert frozen_depth(peft_model) == 0


def test_training_loss_and_gradients_from_kept_states_equal_the_whole_model(tiny_llama_dir):
    _, peft_model = _last_layer_lora(tiny_llama_dir)
    trunk = FrozenTrunk.of(peft_model, budget_mb=100)
    examples = _examples(common=5)
    reference = SupervisedLM(peft_model)(**batch_inputs(collate(examples, pad_id=0, share_prefix=True)))
    reference.backward()
    expected = [p.grad.clone() for p in peft_model.parameters() if p.requires_grad]
    peft_model.zero_grad()
    calls = _Calls(peft_model)
    model = SupervisedLM(peft_model, trunk)
    counts = []
    for indices, share in (([0, 1, 2, 3], False), ([2, 0, 3, 1], True)):  # the second batch reuses the kept states
        rows = collate([examples[i] for i in indices], pad_id=0, share_prefix=share)
        assert (rows.shared_prefix is not None) == share  # ... and runs the shared prompt start once above the trunk
        batch = attach_states(rows, trunk, examples, indices, pad_id=0)
        loss = model(**batch_inputs(batch))
        assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
        counts.append(calls.count)
    assert counts == [1, 1]  # the frozen layer ran once (shared prefix and rows packed in one pass), then never
    loss.backward()
    for mine, theirs in zip((p.grad for p in peft_model.parameters() if p.requires_grad), expected):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)


def test_label_scores_from_kept_states_equal_the_whole_model_with_and_without_the_adapter(tiny_llama_dir):
    base, peft_model = _last_layer_lora(tiny_llama_dir)
    trunk = FrozenTrunk.of(peft_model, budget_mb=100)
    task, texts = _TASK, _TEXTS
    expected = label_score_matrix(peft_model, base.tokenizer, task, texts, batch_size=4)
    calls = _Calls(peft_model)
    for _ in range(2):
        torch.testing.assert_close(label_score_matrix(peft_model, base.tokenizer, task, texts, batch_size=4,
                                                      trunk=trunk), expected, rtol=1e-5, atol=1e-5)
    first_calls = calls.count
    assert first_calls > 0
    with peft_model.disable_adapter():
        bare = label_score_matrix(peft_model.get_base_model(), base.tokenizer, task, texts, batch_size=4)
        assert not torch.allclose(bare, expected)
        calls.count = 0
        torch.testing.assert_close(label_score_matrix(peft_model.get_base_model(), base.tokenizer, task, texts,
                                                      batch_size=4, trunk=trunk), bare, rtol=1e-5, atol=1e-5)
    assert calls.count == 0  # the bare base's frozen layers are the adapter's: their outputs were kept
    # the whole model is itself again afterwards (the layers and their numbering restored)
    torch.testing.assert_close(label_score_matrix(peft_model, base.tokenizer, task, texts, batch_size=4), expected)


def test_rows_past_the_budget_are_not_computed_ahead_and_batches_run_the_whole_model(tiny_llama_dir):
    _, peft_model = _last_layer_lora(tiny_llama_dir)
    trunk = FrozenTrunk(peft_model, 1, budget_mb=1e-6)
    examples = _examples()
    calls = _Calls(peft_model)
    assert trunk.prepare(examples, pad_id=0) is None and trunk.row_states(examples, [0, 1], pad_id=0) is None
    batch = attach_states(collate([examples[0], examples[1]], pad_id=0), trunk, examples, [0, 1], pad_id=0)
    assert batch.trunk_hidden is None and calls.count == 0 and trunk.kept_bytes == 0


def test_label_chunks_past_the_budget_are_computed_again_with_the_same_result(tiny_llama_dir):
    base, peft_model = _last_layer_lora(tiny_llama_dir)
    tokenizer = base.tokenizer
    trunk = FrozenTrunk(peft_model, 1, budget_mb=1e-6)
    calls = _Calls(peft_model)
    first = label_score_matrix(peft_model, tokenizer, _TASK, _TEXTS, batch_size=4, trunk=trunk)
    once = calls.count
    torch.testing.assert_close(label_score_matrix(peft_model, tokenizer, _TASK, _TEXTS, batch_size=4, trunk=trunk),
                               first)
    assert once > 0 and calls.count == 2 * once and trunk.kept_bytes == 0


@pytest.mark.parametrize("metric", ["accuracy", "loss"])  # validation by label scoring, or by the loss pass
def test_a_recipe_with_last_layers_trains_through_the_trunk_like_the_whole_model(tmp_path, tiny_llama_dir, metric):
    import json

    from tests.helpers.recipes import tiny_recipe
    from safetensors import safe_open

    from adapterhub.training.trainer import Trainer, train
    from adapterhub.training.recipe_files import load_recipe

    def run(name, cache_mb):
        raw = tiny_recipe(tmp_path / name, tiny_llama_dir, adapter={"last_layers": 1, "dropout": 0.0},
                          training={"max_steps": 3, "eval_every": 1, "frozen_cache_mb": cache_mb, "eval_base": True,
                                    "early_stopping": {"metric": metric}})
        result = train(raw, progress=False)
        history = json.loads((result.run_dir / "metrics.json").read_text())["history"]
        return result, [r["loss"] for r in history["train"]], [(r["loss"], r.get("accuracy")) for r in history["validation"]]

    kept, kept_train, kept_validation = run("kept", 64)
    whole, whole_train, whole_validation = run("whole", 0)
    assert kept_train == pytest.approx(whole_train, rel=1e-5)
    assert [loss for loss, _ in kept_validation] == pytest.approx([loss for loss, _ in whole_validation], abs=1e-5)
    assert [accuracy for _, accuracy in kept_validation] == [accuracy for _, accuracy in whole_validation]
    assert kept.metrics["base"] == whole.metrics["base"]
    config = json.loads((kept.record.path / "adapter_config.json").read_text())
    assert config["layers_to_transform"] == [1] and sorted(config["target_modules"]) == [
        "down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    with safe_open(str(kept.record.path / "adapter_model.safetensors"), "pt") as weights:
        assert weights.keys() and all(".layers.1." in key for key in weights.keys())
    trainer = Trainer(load_recipe(tiny_recipe(tmp_path / "probe", tiny_llama_dir, adapter={"last_layers": 1})))
    trainer.setup()
    try:
        assert trainer.trunk is not None and trainer.trunk.depth == 1
    finally:
        trainer.cleanup()


def test_last_layers_beyond_the_base_or_with_another_method_is_a_recipe_error(tmp_path, tiny_llama_dir):
    from tests.helpers.recipes import tiny_recipe

    from adapterhub.errors import RecipeError
    from adapterhub.training.recipe_files import load_recipe
    from adapterhub.training.trainer import train

    with pytest.raises(RecipeError, match="last_layers=3, but base .* has 2 decoder layers"):
        train(tiny_recipe(tmp_path / "deep", tiny_llama_dir, adapter={"last_layers": 3}), progress=False)
    assert not (tmp_path / "deep" / "registry").exists()
    with pytest.raises(RecipeError, match="unknown key 'adapter.last_layers'; known keys: method, num_virtual_tokens"):
        load_recipe(tiny_recipe(tmp_path / "prefix", tiny_llama_dir, adapter={"method": "prefix", "last_layers": 1}))
