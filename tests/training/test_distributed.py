"""Data-parallel training with 2 processes on CPU (gloo), started by ``torchrun`` as the README says.

One run of the tiny recipe with 2 processes equals a single-process run with the same global batch
(the 2 processes split each optimizer step's micro-batches; one process accumulates them), rank 0
alone registers, a Ctrl-C mid-run resumes across both processes, and a rank that dies fails the run
with nothing registered.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from adapterhub.registry import Registry
from tests.helpers.recipes import tiny_recipe

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("ddp_worker.py")
SETTINGS = {"adapter": {"dropout": 0.0}, "training": {"batch_size": 2, "lr": 1e-3, "max_steps": 4, "save_every": 1}}


def _torchrun(recipe: dict, folder: Path, *args: str, fault: str = "") -> subprocess.CompletedProcess:
    recipe_file = folder / "recipe.yaml"
    recipe_file.write_text(json.dumps(recipe))
    env = {**os.environ, "PYTHONPATH": str(REPO), "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1",
           "ADAPTERHUB_TEST_FAULT": fault}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(WORKER), str(recipe_file), "--no-progress", "--json", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=folder, timeout=300)


def _losses(run: Path) -> list[float]:
    return [row["loss"] for row in json.loads((run / "metrics.json").read_text())["history"]["train"]]


def test_two_processes_equal_one_and_resume_across_both(tmp_path, tiny_llama_dir):
    from adapterhub.training import train

    single = tiny_recipe(tmp_path / "single", tiny_llama_dir, train_rows=18, **SETTINGS)
    single["training"] = {**single["training"], "gradient_accumulation_steps": 2}  # the same 4 rows a step
    train(single, progress=False)

    both = tiny_recipe(tmp_path / "both", tiny_llama_dir, train_rows=18, **SETTINGS)
    interrupted = _torchrun(both, tmp_path / "both", fault="interrupt@2")
    assert interrupted.returncode != 0
    assert "interrupted at step 2/4; nothing was registered" in interrupted.stderr
    assert "Checkpoint saved in None" not in interrupted.stderr  # every rank names the real folder
    assert not (tmp_path / "both" / "registry").exists() or Registry(tmp_path / "both" / "registry").list() == []

    resumed = _torchrun(both, tmp_path / "both", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads(resumed.stdout)["ref"] == "tiny@1"  # rank 0 alone reports and registers
    assert [r.ref for r in Registry(tmp_path / "both" / "registry").list()] == ["tiny@1"]
    assert sorted(p.name for p in (tmp_path / "both").iterdir()) == ["recipe.yaml", "registry", "run",
                                                                     "train.jsonl", "validation.jsonl"]

    assert _losses(tmp_path / "both" / "run") == pytest.approx(_losses(tmp_path / "single" / "run"), abs=1e-6)
    ours = load_file(tmp_path / "both" / "run" / "adapter" / "adapter_model.safetensors")
    reference = load_file(tmp_path / "single" / "run" / "adapter" / "adapter_model.safetensors")
    assert ours.keys() == reference.keys()
    for key in ours:
        assert torch.allclose(ours[key], reference[key], atol=1e-6), key


def test_a_rank_that_dies_fails_the_run_and_registers_nothing(tmp_path, tiny_llama_dir):
    recipe = tiny_recipe(tmp_path, tiny_llama_dir, train_rows=18, **SETTINGS)
    died = _torchrun(recipe, tmp_path, fault="die@2")
    assert died.returncode != 0
    assert "rank      : 1" in died.stderr and "exitcode  : 3" in died.stderr  # torchrun names the rank that died
    assert not (tmp_path / "registry").exists() or Registry(tmp_path / "registry").list() == []
    assert not (tmp_path / "run" / "adapter").exists()
