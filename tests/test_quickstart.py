"""The main job end to end on the tiny model: train three recipes once, serve them on one base, report."""

from __future__ import annotations

import json

import pytest
import yaml

from adapterhub.cli import main
from adapterhub.quickstart import DOMAINS, FRESH_INPUTS, run
from adapterhub.registry import Registry
from tests.recipe_helpers import LABELS, classification_rows, tiny_recipe, write_jsonl


@pytest.fixture(scope="module")
def recipes(tiny_llama_dir, tmp_path_factory):
    """``medical``/``finance`` (LoRA) and ``legal`` (prefix) recipes on the tiny model, laid out like recipes/."""
    folder = tmp_path_factory.mktemp("recipes")
    for domain in DOMAINS:
        data = folder / "data" / domain
        recipe = tiny_recipe(data, tiny_llama_dir, name=domain, domain=domain)
        if domain == "legal":
            recipe["adapter"] = {"method": "prefix", "num_virtual_tokens": 4}
        write_jsonl(data / "validation.jsonl", classification_rows(6))
        recipe["data"].update(train=f"data/{domain}/train.jsonl", validation=f"data/{domain}/validation.jsonl")
        recipe.pop("output")
        (folder / f"{domain}.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return folder


def test_first_run_trains_the_three_recipes_and_a_second_run_reuses_them(recipes, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # run folders (runs/) land here
    registry = Registry(tmp_path / "registry")
    lines = []
    first = run(recipes=recipes, registry=registry, say=lines.append, progress=False)
    assert first["trained"] == ["medical@1", "finance@1", "legal@1"]
    assert [record.ref for record in registry.list()] == ["finance@1", "legal@1", "medical@1"]
    assert {domain: [text for text, _ in pairs] for domain, pairs in first["answers"].items()} == FRESH_INPUTS
    assert all(label in LABELS for pairs in first["answers"].values() for _, label in pairs)
    alone = {domain: dict(pairs)[FRESH_INPUTS[domain][0]] for domain, pairs in first["answers"].items()}
    assert first["mixed"] == [(d, FRESH_INPUTS[d][0], alone[d]) for d in DOMAINS]  # mixed rows answer as alone
    assert set(first["accuracy"]) == set(first["live_accuracy"]) == set(DOMAINS)
    assert all(0 <= first["live_accuracy"][d] <= 1 and first["load_ms"][d] > 0 for d in DOMAINS)
    assert lines[0].startswith("1/5 base") and any("training recipes/" in line for line in lines)

    lines.clear()
    second = run(recipes=recipes, registry=registry, say=lines.append, progress=False)
    assert second["trained"] == [] and not any("training recipes/" in line for line in lines)
    assert second["answers"] == first["answers"] and second["accuracy"] == first["accuracy"]
    assert len(registry.list()) == 3  # nothing registered twice


def test_cli_prints_the_report_as_json(recipes, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["quickstart", "--recipes", str(recipes), "--registry", str(tmp_path / "r"), "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)  # progress lines went to stderr
    assert report["trained"] == ["medical@1", "finance@1", "legal@1"] and report["live_rows"] == 12
    assert "1/5 base" in captured.err
