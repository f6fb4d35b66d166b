"""A classifier that does not beat chance or the bare base is never registered without --register-anyway."""

from __future__ import annotations

import pytest
import yaml

from adapterhub.cli import main
from adapterhub.errors import BelowBaselineError, TrainingError
from adapterhub.registry import Registry
from adapterhub.training import train
from adapterhub.training.baseline import judge
from tests.helpers.recipes import tiny_recipe

LABELS = ("a", "b", "c", "d")


def _split(accuracy, supports):
    return {"accuracy": accuracy, "count": sum(supports),
            "per_label": {label: {"support": support} for label, support in zip(LABELS, supports)}}


@pytest.mark.parametrize("metrics, passed, baseline", [
    ({"validation": _split(0.281, [8, 8, 8, 8])}, False, 0.25),  # the starter: 28.1% on 4 labels
    ({"validation": _split(0.969, [8, 8, 8, 8])}, True, 0.25),
    ({"validation": _split(0.60, [20, 4, 4, 4])}, False, 0.625),  # below always answering the common label
    ({"validation": _split(0.80, [8, 8, 8, 8]), "base": {"validation": {"accuracy": 0.78}}}, False, 0.78),
    ({"validation": _split(0.90, [8, 8, 8, 8]), "base": {"validation": {"accuracy": 0.78}}}, True, 0.78),
    ({"test": _split(0.50, [8, 8, 8, 8])}, True, 0.25),  # no validation: test is judged
])
def test_the_baseline_is_the_better_of_chance_and_the_bare_base(metrics, passed, baseline):
    verdict = judge(metrics, labels=LABELS, min_gain=0.05)
    assert verdict.passed is passed and verdict.baseline == pytest.approx(baseline)
    assert judge({"train": {"steps": 3}}, labels=LABELS, min_gain=0.05) is None


def _near_chance(tmp_path, tiny_llama_dir):
    """One step at lr 1e-6: the adapter is the bare base, so it cannot beat it by output.min_gain."""
    raw = tiny_recipe(tmp_path, tiny_llama_dir, training={"max_steps": 1, "lr": 1e-6})
    raw["output"]["register_anyway"] = False
    return raw


def test_a_near_chance_adapter_is_kept_in_its_run_but_not_registered(tmp_path, tiny_llama_dir):
    raw = _near_chance(tmp_path, tiny_llama_dir)
    with pytest.raises(BelowBaselineError) as caught:
        train(raw, progress=False)
    assert isinstance(caught.value, TrainingError)
    message = str(caught.value)
    assert "was not registered" in message and "validation accuracy" in message and "bare base" in message
    assert "likely fixes" in message and "register_anyway" in message
    assert Registry(raw["output"]["registry"]).list() == []
    run = tmp_path / "run"
    assert (run / "adapter" / "adapter_model.safetensors").is_file() and (run / "metrics.json").is_file()
    assert not (run / "checkpoints").exists()


def test_the_command_line_refuses_then_registers_with_register_anyway(tmp_path, tiny_llama_dir, capsys):
    raw = _near_chance(tmp_path, tiny_llama_dir)
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(raw), encoding="utf-8")
    assert main(["train", str(recipe), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "not registered" in err and "--register-anyway" in err and "adapterhub recipe new" in err
    assert Registry(raw["output"]["registry"]).list() == []
    assert main(["train", str(recipe), "--no-progress", "--register-anyway", "--run-dir", str(tmp_path / "r2")]) == 0
    assert [record.ref for record in Registry(raw["output"]["registry"]).list()] == ["tiny@1"]
