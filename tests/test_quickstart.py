"""The main job end to end on the tiny model: train three recipes once, serve them on one base, report."""

from __future__ import annotations

import json

import pytest
import yaml

from adapterhub.cli import main
from adapterhub.quickstart import DOMAINS, FRESH_INPUTS, run
from adapterhub.registry import Registry
from tests.helpers.recipes import LABELS, classification_rows, tiny_recipe, write_jsonl


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
        recipe["output"] = {"register_anyway": True}  # default registry and runs; the tiny model is near chance
        (folder / f"{domain}.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return folder


def test_first_run_trains_the_three_recipes_and_a_second_run_reuses_them(recipes, tmp_path, monkeypatch):
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
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
    assert first["live_rows"] == first["validation_rows"] == {d: 6 for d in DOMAINS}  # every row, by default
    assert first["live_accuracy"] == pytest.approx(first["accuracy"], abs=1e-4)  # like with like: the same figure

    # before any training it says which registry is used and why, and where run folders go
    assert lines[0].startswith("1/5 base: loading ")  # the tiny base is a folder: nothing to fetch
    train_at = next(i for i, line in enumerate(lines) if "training " in line and ".yaml" in line)
    said = "\n".join(lines[:train_at])
    assert f"registry {tmp_path / 'registry'} (given explicitly)" in said
    assert f"run folders go to {tmp_path / 'runs'}" in said and "not registered here: medical, finance, legal" in said
    assert not (tmp_path / "elsewhere" / "runs").exists(), "nothing lands in the current folder"
    runs = sorted(p.name.split("-")[0] for p in (tmp_path / "runs").iterdir())
    assert runs == ["finance", "legal", "medical"]
    assert all(not (p / "checkpoints").exists() for p in (tmp_path / "runs").iterdir())

    lines.clear()
    second = run(recipes=recipes, registry=registry, say=lines.append, progress=False)
    assert second["trained"] == [] and not any(".yaml ..." in line for line in lines)
    assert second["answers"] == first["answers"] and second["accuracy"] == first["accuracy"]
    assert len(registry.list()) == 3  # nothing registered twice
    assert not any("fetching" in line for line in lines)


def test_the_default_registry_and_why_are_said_outside_a_checkout(recipes, tmp_path, monkeypatch):
    from adapterhub.paths import registry_origin

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ADAPTERHUB_REGISTRY", raising=False)
    monkeypatch.setenv("ADAPTERHUB_HOME", str(tmp_path / "home"))
    root, why = registry_origin()
    assert root == tmp_path / "home" / "registry" and "$ADAPTERHUB_HOME" in why and "not inside" in why
    monkeypatch.setenv("ADAPTERHUB_REGISTRY", str(tmp_path / "env-registry"))
    assert registry_origin() == (tmp_path / "env-registry", "from $ADAPTERHUB_REGISTRY")


def test_cli_prints_the_report_as_json(recipes, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["quickstart", "--recipes", str(recipes), "--registry", str(tmp_path / "r"), "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)  # progress lines went to stderr
    assert report["trained"] == ["medical@1", "finance@1", "legal@1"] and report["live_rows"] == {d: 6 for d in DOMAINS}
    assert "1/5 base" in captured.err and report["runs"] == str(tmp_path / "runs")

    assert main(["quickstart", "--recipes", str(recipes), "--registry", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "validation accuracy (at training)" in out and "re-scored now" in out and " of first" not in out
    assert out.count(" of 6") == 6 and "every validation row again" in out  # recorded and re-scored: the same rows

    assert main(["quickstart", "--recipes", str(recipes), "--registry", str(tmp_path / "r"), "--recheck", "4"]) == 0
    out = capsys.readouterr().out
    assert out.count(" of 6") == 3 and out.count(" of first 4") == 3  # a sample says so, in every row
    assert "a sample of the first validation rows" in out and "--recheck all" in out
