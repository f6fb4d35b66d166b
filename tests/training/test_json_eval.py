"""Adapters that answer in JSON are scored by schema-constrained generation: at the end of training (a recipe's
``serve.schema``) and by ``evaluate_file`` (the stored contract's schema), with the real grammar engine on the
tiny llama."""

from __future__ import annotations

import json

import jsonschema
import pytest

from adapterhub.grammar import Grammars, canonical
from adapterhub.registry import Registry
from adapterhub.registry.contract import set_contract
from adapterhub.training.json_eval import answer_metrics, constrained_greedy, scores_answers
from tests.helpers.recipes import tiny_recipe, write_jsonl

SCHEMA = {"type": "object", "properties": {"subject": {"enum": ["physics", "history", "computer_science"]},
                                           "level": {"enum": ["primary", "university"]}},
          "required": ["subject", "level"], "additionalProperties": False}
QUESTIONS = [("why is the sky blue", "physics", "primary"), ("who built the pyramids", "history", "primary"),
             ("prove quicksort is n log n on average", "computer_science", "university"),
             ("derive the Lagrangian of a pendulum", "physics", "university")]


def _rows(count: int) -> list[dict]:
    return [{"question": f"{q} ({i})", "answer": {"subject": s, "level": lv}}
            for i, (q, s, lv) in zip(range(count), QUESTIONS * count)]


def _json_recipe(folder, model_dir, *, serve: dict | None) -> dict:
    raw = tiny_recipe(folder, model_dir, validation_rows=0, training={"max_steps": 2, "eval_batch_size": 4})
    write_jsonl(folder / "train.jsonl", _rows(8))
    write_jsonl(folder / "validation.jsonl", _rows(4))
    write_jsonl(folder / "test.jsonl", _rows(6))
    raw["data"] = {"train": str(folder / "train.jsonl"), "validation": str(folder / "validation.jsonl"),
                   "test": str(folder / "test.jsonl"), "format": "instruction", "chat": False,
                   "fields": {"instruction": "question", "output": "answer"},
                   "prompt_template": "Subject and level as JSON.\nQuestion: {text}\n", "max_length": 96}
    if serve is not None:
        raw["serve"] = serve
    return raw


def test_training_scores_json_answers_under_the_serve_schema_and_evaluate_agrees(tmp_path, tiny_llama_dir):
    from adapterhub import load_base
    from adapterhub.training.evaluate import evaluate_file
    from adapterhub.training.trainer import train

    raw = _json_recipe(tmp_path, tiny_llama_dir, serve={"temperature": 0, "max_tokens": 24, "schema": SCHEMA})
    record = train(raw, progress=False).record
    test = record.manifest["metrics"]["test"]
    assert test["rows"] == 6 and test["json_valid"] == 1.0  # constrained: every answer parses and fits the schema
    assert {"subject_accuracy", "level_accuracy", "exact_match", "loss"} <= set(test)
    assert test["exact_match"] <= min(test["subject_accuracy"], test["level_accuracy"])
    assert record.manifest["metrics"]["validation"]["json_valid"] == 1.0
    assert record.manifest["contract"]["evaluated_on"]["none"]["subject_accuracy"] == test["subject_accuracy"]

    again = evaluate_file(record.ref, tmp_path / "test.jsonl", registry=Registry(raw["output"]["registry"]),
                          base=load_base(str(tiny_llama_dir), device="cpu"))
    assert {key: again[key] for key in ("json_valid", "exact_match", "subject_accuracy", "level_accuracy")} == \
        {key: test[key] for key in ("json_valid", "exact_match", "subject_accuracy", "level_accuracy")}


def test_no_schema_no_answer_scores_until_a_contract_adds_one(tmp_path, tiny_llama_dir, capsys):
    """An adapter trained without ``serve:`` gets loss only; ``set-contract`` with a schema adds answer scores."""
    from adapterhub import load_base
    from adapterhub.training.evaluate import evaluate_file
    from adapterhub.training.trainer import train

    raw = _json_recipe(tmp_path, tiny_llama_dir, serve=None)
    record = train(raw, progress=False).record
    assert "json_valid" not in record.manifest["metrics"]["test"] and "schema" not in record.manifest["contract"]
    registry = Registry(raw["output"]["registry"])
    base = load_base(str(tiny_llama_dir), device="cpu")
    assert "json_valid" not in evaluate_file(record.ref, tmp_path / "test.jsonl", registry=registry, base=base)
    contracted = set_contract(registry, record.ref, {"schema": json.loads(json.dumps(SCHEMA, sort_keys=True))})
    scored = evaluate_file(contracted.ref, tmp_path / "test.jsonl", registry=registry, base=base)
    assert scored["json_valid"] == 1.0 and scored["rows"] == 6

    from adapterhub.cli import main  # the CLI scores it the same way and records the scores in the contract

    assert main(["evaluate", contracted.ref, "--data", str(tmp_path / "test.jsonl"), "--registry",
                 str(registry.root), "--record-contract", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["recorded_as"] == "tiny@3" and printed["exact_match"] == scored["exact_match"]
    contract = registry.get("tiny@3").manifest["contract"]
    assert contract["evaluated_on"]["none"]["json_valid"] == 1.0 and contract["schema"] == SCHEMA


def test_constrained_answers_keep_the_required_order_and_json_dumps_layout(tiny_base):
    """A stored manifest sorts keys; the answer still writes ``required``'s order, as training rendered it."""
    stored = json.loads(json.dumps(SCHEMA, sort_keys=True))
    assert list(stored["properties"]) == ["level", "subject"]
    assert canonical(stored).index('"subject"') < canonical(stored).index('"level"')
    grammars = Grammars(tiny_base.tokenizer, vocab_size=tiny_base.model.config.vocab_size)
    prompts = [tiny_base.tokenizer("a question", add_special_tokens=False)["input_ids"], [5, 6, 7, 8, 9]]
    texts = constrained_greedy(tiny_base.model, tiny_base.tokenizer, prompts,
                               [grammars.state(stored) for _ in prompts], max_new_tokens=80)
    for text in texts:
        assert text.startswith('{"subject": "') and '", "level": "' in text and text.endswith('"}')
        jsonschema.validate(json.loads(text), SCHEMA)


def test_answer_metrics_score_what_was_generated(tiny_base):
    from adapterhub.prompts import TaskSpec

    task = TaskSpec(type="generation", prompt_template="Q: {text}\n", chat=False)
    rows = [{"instruction": q, "output": {"subject": s, "level": lv}} for q, s, lv in QUESTIONS]
    scores = answer_metrics(tiny_base.model, tiny_base.tokenizer, task, rows, schema=SCHEMA, batch_size=3)
    assert scores["rows"] == 4 and scores["json_valid"] == 1.0
    assert set(scores) == {"rows", "json_valid", "exact_match", "level_accuracy", "subject_accuracy"}
    assert all(0.0 <= scores[key] <= 1.0 for key in scores if key != "rows")


@pytest.mark.parametrize("fmt, rows, schema, scored", [
    ("instruction", [{"instruction": "q", "output": {"a": 1}}], SCHEMA, True),
    ("instruction", [{"instruction": "q", "output": {"a": 1}}], None, False),
    ("instruction", [{"instruction": "q", "output": "free text"}], SCHEMA, False),
    ("completion", [{"prompt": "q", "completion": "{}"}], SCHEMA, False),
    ("instruction", [], SCHEMA, False),
])
def test_which_splits_are_scored_by_their_answers(fmt, rows, schema, scored):
    assert scores_answers(fmt, rows, schema) is scored
