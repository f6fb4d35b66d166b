"""Metrics: label accuracy/F1, loss/perplexity, and label scoring with and without the adapter."""

from __future__ import annotations

import math

import pytest
import torch

from adapterhub.training.data import Split, encode_split
from adapterhub.training.evaluate import (classify, evaluate_split, label_metrics, label_score_matrix, loss_metrics,
                                 zero_shot_metrics)
from adapterhub.prompts import TaskSpec, score_labels
from tests.helpers.recipes import LABELS, classification_rows

TASK = TaskSpec(type="classification", labels=tuple(LABELS), prompt_template="Sentiment?\n{text}")


@pytest.mark.parametrize("predictions, references, accuracy, f1", [
    (["a", "b", "a"], ["a", "b", "a"], 1.0, {"a": 1.0, "b": 1.0, "c": 0.0}),
    (["b", "a", "b"], ["a", "b", "a"], 0.0, {"a": 0.0, "b": 0.0, "c": 0.0}),
    (["a", "a", "a", "b"], ["a", "b", "a", "b"], 0.75, {"a": 0.8, "b": 0.6667, "c": 0.0}),
    (["c", "c"], ["a", "c"], 0.5, {"a": 0.0, "b": 0.0, "c": 0.6667}),
])
def test_label_metrics(predictions, references, accuracy, f1):
    metrics = label_metrics(predictions, references, labels=("a", "b", "c"))
    assert metrics["accuracy"] == accuracy and metrics["f1"] == f1 and metrics["count"] == len(references)
    assert metrics["macro_f1"] == pytest.approx(sum(f1.values()) / 3, abs=1e-4)


@pytest.fixture
def lora_model(tiny_base):
    """The tiny base with a random (non-zero) LoRA adapter; unloaded again afterwards."""
    from peft import LoraConfig, get_peft_model

    from adapterhub.training.lm_loss import SupervisedLM

    torch.manual_seed(0)
    model = SupervisedLM(get_peft_model(tiny_base.model, LoraConfig(r=4, target_modules="all-linear",
                                                                    init_lora_weights=False)))
    yield model
    model.model.unload()


@pytest.fixture
def split(tiny_base) -> Split:
    rows = classification_rows(6)
    examples = encode_split(rows, fmt="classification", tokenizer=tiny_base.tokenizer, task=TASK, max_length=256,
                            origin="rows")
    return Split("rows", rows, examples)


def test_loss_metrics_average_over_supervised_tokens(lora_model, split):
    from adapterhub.training.batching import collate
    from adapterhub.training.lm_loss import batch_inputs

    metrics = loss_metrics(lora_model, split.examples, pad_id=0, batch_size=4)
    with torch.no_grad():
        total = sum(lora_model(**batch_inputs(collate([e], pad_id=0))).item() for e in split.examples)
    tokens = sum(sum(label != -100 for label in e.labels[1:]) for e in split.examples)
    assert metrics["tokens"] == tokens
    assert metrics["loss"] == pytest.approx(total / tokens, abs=1e-4)
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["loss"]), rel=1e-3)


def test_classification_accuracy_comes_from_label_scoring(lora_model, split, tiny_base):
    metrics = evaluate_split(lora_model, tiny_base.tokenizer, TASK, split, batch_size=4)
    model = lora_model.model

    def logits_fn(input_ids, attention_mask, _sources):
        return model(input_ids=input_ids, attention_mask=attention_mask).logits

    with torch.no_grad():
        scores = score_labels(logits_fn, tiny_base.tokenizer, TASK, [r["text"] for r in split.rows])
    predictions = [TASK.labels[int(i)] for i in scores.argmax(-1)]
    expected = label_metrics(predictions, [r["label"] for r in split.rows], labels=TASK.labels)
    assert {k: metrics[k] for k in expected} == expected
    loss_only = evaluate_split(lora_model, tiny_base.tokenizer, TASK, split, batch_size=4, accuracy=False)
    assert "accuracy" not in loss_only
    # one pass: the gold label's score is the example's summed token loss
    assert metrics["tokens"] == loss_only["tokens"]
    assert metrics["loss"] == pytest.approx(loss_only["loss"], abs=1e-4)
    assert metrics["perplexity"] == pytest.approx(loss_only["perplexity"], rel=1e-3)


def _scores(model, tokenizer, texts):
    def logits_fn(input_ids, attention_mask, _sources):
        return model(input_ids=input_ids, attention_mask=attention_mask).logits

    with torch.no_grad():
        return score_labels(logits_fn, tokenizer, TASK, texts)


def test_zero_shot_uses_the_bare_base(tiny_base, split):
    from peft import LoraConfig, get_peft_model

    texts, references = [row["text"] for row in split.rows], [row["label"] for row in split.rows]
    bare_scores = _scores(tiny_base.model, tiny_base.tokenizer, texts)
    bare = classify(tiny_base.model, tiny_base.tokenizer, TASK, texts)
    torch.manual_seed(3)
    peft_model = get_peft_model(tiny_base.model, LoraConfig(r=8, target_modules="all-linear", init_lora_weights=False))
    try:
        adapted_scores = _scores(peft_model, tiny_base.tokenizer, texts)
        zero_shot = zero_shot_metrics(peft_model, tiny_base.tokenizer, TASK, split)
    finally:
        peft_model.unload()
    assert not torch.allclose(adapted_scores, bare_scores)  # the adapter does change the scores...
    assert zero_shot == label_metrics(bare, references, labels=TASK.labels)  # ...and zero-shot switches it off


@pytest.mark.parametrize("method", ["lora", "prefix", "bare"])
def test_label_score_matrix_equals_a_full_forward_per_row(tiny_llama_dir, method):
    from peft import LoraConfig, PrefixTuningConfig, get_peft_model

    from adapterhub import load_base

    base = load_base(str(tiny_llama_dir), device="cpu")
    torch.manual_seed(0)
    model = {"lora": lambda: get_peft_model(base.model, LoraConfig(r=4, target_modules="all-linear",
                                                                    init_lora_weights=False)),
             "prefix": lambda: get_peft_model(base.model, PrefixTuningConfig(num_virtual_tokens=4,
                                                                              task_type="CAUSAL_LM")),
             "bare": lambda: base.model}[method]()
    texts = [row["text"] for row in classification_rows(5)]
    with torch.no_grad():
        expected = _scores(model, base.tokenizer, texts)
    scores = label_score_matrix(model, base.tokenizer, TASK, texts, batch_size=4)  # several passes
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-4)


def test_a_missing_data_file_names_the_argument_not_a_recipe(tmp_path, capsys, registry_root):
    from adapterhub.cli import main
    from adapterhub.errors import DataError
    from adapterhub.training.evaluate import evaluate_file

    missing = tmp_path / "missing.jsonl"
    with pytest.raises(DataError, match=r"missing\.jsonl does not exist; pass an existing .* as data=") as caught:
        evaluate_file("finance", missing)
    assert "recipe" not in str(caught.value)
    assert main(["evaluate", "finance", "--data", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "--data" in err and "recipe" not in err and "data=" not in err
