"""Run folders: where a run lives, which one --resume picks, and when a changed recipe blocks resuming."""

from __future__ import annotations

import pytest

from adapterhub.training import run_dir as runs
from adapterhub.errors import TrainingError

RECIPE = {"name": "x", "training": {"lr": 1e-3, "eval_base": False}, "output": {"registry": None}}


def _with_checkpoint(path):
    (path / "checkpoints" / "step-000001").mkdir(parents=True)
    (path / "checkpoints" / "step-000001" / "state.json").write_text("{}")
    return path


def test_resume_picks_the_newest_run_with_a_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TrainingError, match="no run of 'fin' with a checkpoint"):
        runs.find_resumable("fin", None)
    older = _with_checkpoint(runs.new_run_dir("fin", "runs/fin-20260101-000000"))
    newer = _with_checkpoint(runs.new_run_dir("fin", "runs/fin-20260102-000000"))
    runs.new_run_dir("fin", "runs/fin-20260103-000000")  # started, never checkpointed
    assert runs.find_resumable("fin", None) == newer
    assert runs.find_resumable("fin", older) == older
    with pytest.raises(TrainingError, match="already has checkpoints"):
        runs.new_run_dir("fin", older)
    with pytest.raises(TrainingError, match="has no checkpoint"):
        runs.find_resumable("fin", "runs/fin-20260103-000000")


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(runs.time, "strftime", lambda _format: "20260101-000000")
    folders = [runs.new_run_dir("fin", None) for _ in range(3)]
    assert [folder.name for folder in folders] == ["fin-20260101-000000", "fin-20260101-000000-2",
                                                   "fin-20260101-000000-3"]


@pytest.mark.parametrize("change, blocks", [
    ({"training": {"lr": 5e-4, "eval_base": False}}, "training.lr"),
    ({"training": {"lr": 1e-3, "eval_base": True}}, None),
    ({"output": {"registry": "/elsewhere"}}, None),
    ({"adapter": {"r": 4}}, "adapter"),
])
def test_only_training_relevant_changes_block_resume(tmp_path, change, blocks):
    import yaml

    runs.write_recipe(tmp_path, yaml.safe_dump(RECIPE))
    current = {**RECIPE, **change}
    if blocks is None:
        runs.check_same_recipe(tmp_path, current)
    else:
        with pytest.raises(TrainingError, match=f"recipe changed since the run started \\({blocks}"):
            runs.check_same_recipe(tmp_path, current)


def test_metrics_and_loss_plot(tmp_path):
    history = {"train": [{"step": s, "loss": 1 / s} for s in range(1, 9)], "validation": [{"step": 8, "loss": 0.2}]}
    runs.write_metrics(tmp_path, {"metrics": {"validation": {"loss": 0.2}}, "history": history})
    assert runs.read_metrics(tmp_path) == {"validation": {"loss": 0.2}}
    assert runs.plot_losses(tmp_path, history, title="x").read_bytes()[:4] == b"\x89PNG"
    assert runs.plot_losses(tmp_path, {"train": []}, title="x") is None
