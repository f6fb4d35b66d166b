"""ServingEvaluator on a generation adapter whose answers are JSON objects: loss and perplexity from the routed
forward, and json_valid / exact_match / field_accuracy of the answers the hub generates, usable in a gate."""

from __future__ import annotations

import pytest

from adapterhub.errors import PromotionRefusedError
from adapterhub.training.json_metrics import json_answer_metrics
from tests.helpers.recipes import write_jsonl

ROWS = [{"question": "How do plants make sugar from light?", "answer": {"subject": "biology", "level": "primary"}},
        {"question": "What is a derivative?", "answer": {"subject": "mathematics", "level": "secondary"}},
        {"question": "Why did Rome fall?", "answer": {"subject": "history", "level": "university"}}]
TEMPLATE = "Give the subject and level as JSON.\nQuestion: {text}\n"


@pytest.fixture
def json_registry(tiny_base, tmp_path):
    from adapterhub import Registry
    from adapterhub.runtime.testing import make_random_adapters

    test = write_jsonl(tmp_path / "test.jsonl", ROWS)
    recipe = {"data": {"format": "instruction", "test": str(test),
                       "fields": {"instruction": "question", "output": "answer"}}}
    registry = Registry(tmp_path / "registry")
    for folder in make_random_adapters(tiny_base, tmp_path / "adapters", count=2, r=2, std=0.5):
        registry.add(folder, "education", task={"type": "generation", "prompt_template": TEMPLATE},
                     recipe=recipe, base=tiny_base)
    return registry


def test_json_answers_are_scored_as_the_hub_generates_them_and_gate_a_promotion(tiny_base, json_registry):
    from adapterhub import AdapterHub
    from adapterhub.lifecycle import ServingEvaluator

    with AdapterHub(tiny_base, registry=json_registry) as hub:
        evaluate = ServingEvaluator(hub)
        metrics = evaluate("education@1", None)  # the recipe's test file
        assert metrics["rows"] == 3 and metrics["loss"] > 0 and metrics["tokens"] > 0
        assert {"json_valid", "exact_match", "field_accuracy"} <= set(metrics)
        answers = hub.generate([row["question"] for row in ROWS], domain="education@1", max_new_tokens=64)
        shorter = hub.generate([row["question"] for row in ROWS], domain="education@1",
                               max_new_tokens=metrics_budget(hub))
        assert [a.startswith(s) for a, s in zip(answers, shorter)] == [True] * 3
        assert json_answer_metrics(shorter, [row["answer"] for row in ROWS]) == {
            key: metrics[key] for key in ("rows", "json_valid", "exact_match", "field_accuracy")}
        json_registry.promote("education@1", channel="prod", gate="json_valid >= 0", evaluate=evaluate)
        with pytest.raises(PromotionRefusedError, match=r"json_valid >= prod \+ 101: "):
            json_registry.promote("education@2", channel="prod", gate="json_valid >= prod + 101", evaluate=evaluate)
        assert json_registry.channel("education", "prod").holder == 1


def metrics_budget(hub) -> int:
    """The evaluator's answer budget: the longest reference answer's tokens plus 8."""
    from adapterhub.training.data import output_text

    return max(len(hub.tokenizer(output_text(row["answer"]))["input_ids"]) for row in ROWS) + 8
