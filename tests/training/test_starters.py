"""``adapterhub recipe new --task``: every starter parses, and the classification one carries the shipped settings."""

from __future__ import annotations

import pytest
import yaml

from adapterhub.cli import main
from adapterhub.training import load_recipe
from adapterhub.training.starters import TASKS, starter_name, starter_recipe


@pytest.mark.parametrize("task", TASKS)
def test_every_starter_parses_and_names_its_blanks(task):
    text = starter_recipe(task, name="support")
    recipe = load_recipe(yaml.safe_load(text))
    assert recipe.name == "support" and recipe.data.train.path == "data/support/train.jsonl"
    assert "EDIT" in text and "adapterhub train THIS_FILE" in text
    edits = [line for line in text.splitlines() if "EDIT" in line and not line.startswith("#")]
    assert all(line.split(":")[0].strip() in ("train", "validation", "test", "labels", "system_prompt")
               for line in edits), edits


def test_the_classification_starter_is_what_the_shipped_classifiers_use():
    recipe = load_recipe(yaml.safe_load(starter_recipe("classification")))
    shipped = load_recipe("recipes/medical.yaml")
    for key in ("lr", "epochs", "eval_every", "batch_size", "scheduler"):
        assert getattr(recipe.training, key) == getattr(shipped.training, key), key
    assert recipe.adapter.last_layers == shipped.adapter.last_layers and recipe.adapter.r == shipped.adapter.r
    assert recipe.data.chat is False and "{labels}" in recipe.data.prompt_template
    assert recipe.training.early_stopping.metric == "accuracy" and recipe.training.eval_base
    assert recipe.output.min_gain == 0.05 and not recipe.output.register_anyway


def test_recipe_new_names_the_adapter_after_the_file(tmp_path, capsys):
    path = tmp_path / "Support Tickets.yaml"
    assert main(["recipe", "new", str(path)]) == 0
    assert "fill in the lines marked EDIT" in capsys.readouterr().out
    assert load_recipe(path).name == "support-tickets" and starter_name(None) == "my-adapter"
    ner = tmp_path / "ner.yaml"
    assert main(["recipe", "new", str(ner), "--task", "ner"]) == 0
    assert load_recipe(ner).data.format == "token_classification"
    assert main(["recipe", "new", str(tmp_path / "x.yaml"), "--task", "poetry"]) == 2
    assert "use one of classification, instruction, chat, ner" in capsys.readouterr().err
    reference = tmp_path / "all.yaml"
    assert main(["recipe", "new", str(reference), "--all-keys"]) == 0
    assert "frozen_cache_mb" in reference.read_text() and "# peak learning rate" in reference.read_text()


def test_the_support_example_is_the_starter_with_data_and_labels_filled_in():
    from pathlib import Path

    from adapterhub.training.data_check import precheck

    folder = Path(__file__).resolve().parents[2] / "examples" / "support"
    starter = starter_recipe("classification", name="support", file="support.yaml")
    filled = starter.replace("data/support/", "").replace("test: null   ", "test: test.jsonl").replace(
        "[EDIT_first_label, EDIT_second_label]", "[billing, bug, feature_request, account_access]")
    written = (folder / "support.yaml").read_text()
    assert [line.split("#")[0].strip() for line in written.splitlines()] == \
        [line.split("#")[0].strip() for line in filled.splitlines()]
    recipe = load_recipe(folder / "support.yaml")
    assert precheck(recipe) == []  # every label has rows in every split; validation exists
    rows = {name: len((folder / f"{name}.jsonl").read_text().splitlines()) for name in ("train", "validation", "test")}
    assert rows == {"train": 120, "validation": 32, "test": 32}
