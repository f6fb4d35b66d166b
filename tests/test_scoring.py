"""Label scoring: a chunk whose rows share one adapter runs their common prompt start once, with the same scores."""

from __future__ import annotations

import pytest
import torch

from adapterhub.prompts import TaskSpec, score_labels
from adapterhub.scoring import Routing, label_scores
from adapterhub.training.evaluate import label_score_matrix
from adapterhub.training.lm_loss import causal_lm

TASK = TaskSpec(type="classification", labels=("positive", "negative", "no opinion"), chat=False,
                prompt_template="Classify the sentiment of this sentence as one of: {labels}.\nSentence: {text}\n")
TEXTS = ["Revenue rose and margins widened.", "The bank cut jobs.", "Guidance was cut again after a weak quarter.",
         "The board meets on Tuesday."]


class _FirstLayerTokens:
    """Counts the token positions the first decoder layer computes, and its passes over one row."""

    def __init__(self, model):
        self.tokens = self.single_rows = 0
        causal_lm(model).get_decoder().layers[0].register_forward_hook(self._seen)

    def _seen(self, module, args, output):
        hidden = args[0]
        self.tokens += hidden.shape[0] * hidden.shape[1]
        self.single_rows += hidden.shape[0] == 1


def _reference(model, tokenizer):
    """One full forward per (text, label) row: the definition of a label's score."""
    with torch.no_grad():
        return score_labels(lambda ids, mask, _: model(input_ids=ids, attention_mask=mask).logits, tokenizer, TASK,
                            TEXTS)


def _peft(tiny_base, method):
    from peft import LoraConfig, PrefixTuningConfig, get_peft_model

    torch.manual_seed(0)
    config = (LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False) if method == "lora" else
              PrefixTuningConfig(num_virtual_tokens=5, task_type="CAUSAL_LM"))
    return get_peft_model(tiny_base.model, config)


@pytest.mark.parametrize("method", ["lora", "prefix"])
@pytest.mark.parametrize("batch_size", [32, 6])  # 6: two chunks of two rows, the second reusing the start's cache
def test_shared_prompt_start_gives_the_scores_of_one_forward_per_label(tiny_base, method, batch_size, monkeypatch):
    model = _peft(tiny_base, method)
    try:
        expected = _reference(model, tiny_base.tokenizer)
        counter = _FirstLayerTokens(model)
        shared = label_score_matrix(model, tiny_base.tokenizer, TASK, TEXTS, batch_size=batch_size)
        shared_tokens, counter.tokens = counter.tokens, 0
        assert counter.single_rows == 1  # the instruction ran once for the whole call, whatever the chunks
        monkeypatch.setattr("adapterhub.scoring.common_prefix", lambda rows: 0)  # every prompt in full
        separate = label_score_matrix(model, tiny_base.tokenizer, TASK, TEXTS, batch_size=batch_size)
        torch.testing.assert_close(shared, expected, atol=1e-4, rtol=0)
        torch.testing.assert_close(shared, separate, atol=1e-5, rtol=0)
        assert shared_tokens < counter.tokens  # the instruction ran once, not once per row
    finally:
        if method == "lora":
            model.unload()


def test_rows_of_different_adapters_share_nothing_and_score_the_same(tiny_base):
    def scores(routing):
        counter.tokens = 0
        with torch.inference_mode():
            found = label_scores(tiny_base.model, tiny_base.tokenizer, [TASK] * len(TEXTS), TEXTS,
                                 lambda rows: routing, batch_size=32)
        return torch.tensor(found), counter.tokens

    counter = _FirstLayerTokens(tiny_base.model)
    shared, shared_tokens = scores(Routing())
    separate, separate_tokens = scores(Routing(adapter=None))  # e.g. a mixed batch: every row's prompt in full
    torch.testing.assert_close(shared, separate, atol=1e-5, rtol=0)
    torch.testing.assert_close(shared, _reference(tiny_base.model, tiny_base.tokenizer), atol=1e-4, rtol=0)
    assert shared_tokens < separate_tokens


class _FirstLayerRows:
    """Records the rows × tokens of every pass through the first decoder layer."""

    def __init__(self, model):
        self.shapes = []
        causal_lm(model).get_decoder().layers[0].register_forward_hook(
            lambda module, args, output: self.shapes.append(tuple(args[0].shape[:2])))


@pytest.mark.parametrize("method", ["lora", "prefix"])
@pytest.mark.parametrize("attention", ["sdpa", "eager", "one row per label"])
def test_labels_side_by_side_give_the_scores_of_one_forward_per_label(tiny_base, method, attention, monkeypatch):
    """A row's labels share one forward row (each masked to the prompt and its own tokens) under SDPA's boolean
    and eager attention's additive mask; another attention gets one row per label, over a copy of the cache."""
    model = _peft(tiny_base, method)
    try:
        expected = _reference(model, tiny_base.tokenizer)
        if attention == "one row per label":
            monkeypatch.setattr("adapterhub.scoring._side_by_side_mask", lambda model: None)
        else:
            monkeypatch.setattr(model.config, "_attn_implementation", attention)
        passes = _FirstLayerRows(model)
        found = label_score_matrix(model, tiny_base.tokenizer, TASK, TEXTS, batch_size=32)
        torch.testing.assert_close(found, expected, atol=1e-4, rtol=0)
        label_rows = passes.shapes[-1][0]  # the last pass: the labels' later tokens
        assert label_rows == len(TEXTS) * (len(TASK.labels) if attention == "one row per label" else 1)
    finally:
        if method == "lora":
            model.unload()
