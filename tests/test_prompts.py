"""Prompt rendering and label scoring against a brute-force reference."""

from __future__ import annotations

import pytest
import torch

from adapterhub.errors import ConfigError
from adapterhub.prompts import (TaskSpec, answer_ids, predict_labels, prompt_ids, render_prompt,
                                score_labels)

TASK = TaskSpec(type="classification", labels=("positive", "negative", "neutral"),
                prompt_template="Sentiment? ({labels})\n{text}")


@pytest.mark.parametrize("data, message", [
    ({"type": "classification", "labels": ["a"]}, "at least two labels"),
    ({"type": "classification", "labels": ["a", "a"]}, "unique"),
    ({"type": "summarise"}, "unknown task type"),
    ({"prompt_template": "no placeholder"}, "{text}"),
    ({"colour": "red"}, "unknown task field"),
])
def test_bad_task_specs(data, message):
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("}", r"\}")):
        TaskSpec.from_dict(data)


def test_round_trip_and_chat_rendering(tiny_base):
    assert TaskSpec.from_dict(TASK.to_dict()) == TASK
    prompt = render_prompt(tiny_base.tokenizer, TASK, "Profits doubled.")
    assert prompt.startswith("<|im_start|>user\nSentiment? (positive, negative, neutral)\nProfits doubled.")
    assert prompt.endswith("<|im_start|>assistant\n")
    plain = TaskSpec(**{**TASK.to_dict(), "labels": TASK.labels, "chat": False})
    assert render_prompt(tiny_base.tokenizer, plain, "x") == "Sentiment? (positive, negative, neutral)\nx"


def test_scores_match_brute_force(tiny_base):
    model, tokenizer = tiny_base.model, tiny_base.tokenizer
    texts = ["Profits doubled.", "The bank cut 400 jobs after a loss.", "Meeting is on Monday."]

    def logits_fn(input_ids, attention_mask, sources):
        return model(input_ids=input_ids, attention_mask=attention_mask).logits

    scores = score_labels(logits_fn, tokenizer, TASK, texts, batch_size=4)
    for t, text in enumerate(texts):
        prompt = prompt_ids(tokenizer, render_prompt(tokenizer, TASK, text))
        for l, label in enumerate(TASK.labels):
            ids = prompt + answer_ids(tokenizer, label)
            with torch.inference_mode():
                logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0], -1)
            expected = sum(logprobs[p - 1, ids[p]].item() for p in range(len(prompt), len(ids)))
            assert scores[t, l].item() == pytest.approx(expected, abs=1e-4)
    assert predict_labels(logits_fn, tokenizer, TASK, texts) == [TASK.labels[int(i)] for i in scores.argmax(-1)]
