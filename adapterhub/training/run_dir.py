"""The run directory: everything one training run leaves behind.

::

    runs/finance-20260101-120000/
      recipe.yaml        the resolved recipe (absolute data paths; re-runnable)
      metrics.json       final metrics and the full train/validation history
      loss.png           training and validation loss per step
      checkpoints/       step-000064/ ... (see adapterhub.training.checkpoint); deleted once the run
                         succeeds unless output.prune_checkpoints is false
      adapter/           the finished PEFT adapter (+ adapterhub.json: task, domain, base, metrics)

>>> new_run_dir("finance", None).name.startswith("finance-")  # doctest: +SKIP
True
"""

from __future__ import annotations

import itertools
import json
import shutil
import time
from pathlib import Path
from typing import Any

from .checkpoint import latest_checkpoint
from ..errors import TrainingError

RECIPE_FILE = "recipe.yaml"
METRICS_FILE = "metrics.json"
PLOT_FILE = "loss.png"
_RESUME_INSENSITIVE = {("output",), ("training", "eval_base"), ("training", "eval_batch_size"), ("description",),
                       ("tags",)}


def default_run_dir(name: str, root: str | Path | None = None) -> Path:
    """``<root>/<name>-<YYYYmmdd-HHMMSS>``; ``root`` defaults to ``runs/`` under the current directory."""
    return Path(root or "runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def new_run_dir(name: str, requested: str | Path | None, *, root: str | Path | None = None) -> Path:
    """Create the folder of a new run: ``requested`` if given, else a fresh :func:`default_run_dir` under ``root``.

    Two runs of one recipe started within the same second get ``...-HHMMSS`` and
    ``...-HHMMSS-2`` (the folder is claimed with an exclusive ``mkdir``).

    Raises:
        TrainingError: ``requested`` already holds checkpoints (resume it or pick another folder).
    """
    if not requested:
        stamped = default_run_dir(name, root)
        for attempt in itertools.count(1):
            path = stamped if attempt == 1 else stamped.with_name(f"{stamped.name}-{attempt}")
            try:
                path.mkdir(parents=True)
                return path
            except FileExistsError:
                continue
    path = Path(requested)
    if latest_checkpoint(path) is not None:
        raise TrainingError(f"run directory {path} already has checkpoints; continue it with --resume, "
                            "or choose another --run-dir")
    path.mkdir(parents=True, exist_ok=True)
    return path


def find_resumable(name: str, requested: str | Path | None, *, root: str | Path | None = None) -> Path:
    """The run to resume: ``requested``, else the newest ``<root or runs>/<name>-*`` with a checkpoint.

    Raises:
        TrainingError: there is no checkpoint to resume from.
    """
    if requested:
        path = Path(requested)
        if latest_checkpoint(path) is None:
            raise TrainingError(f"--resume: run directory {path} has no checkpoint; start a new run without --resume")
        return path
    runs = Path(root or "runs")
    candidates = sorted(p for p in runs.glob(f"{name}-*") if latest_checkpoint(p) is not None)
    if not candidates:
        raise TrainingError(f"--resume: no run of {name!r} with a checkpoint under {runs.resolve()}; "
                            "pass --run-dir, or start a new run without --resume")
    return candidates[-1]


def check_same_recipe(run_dir: Path, current: dict[str, Any]) -> None:
    """Refuse to resume a run whose recipe changed in anything that affects training.

    Raises:
        TrainingError: naming the first keys that differ.
    """
    import yaml

    saved_file = run_dir / RECIPE_FILE
    if not saved_file.is_file():
        return
    saved = yaml.safe_load(saved_file.read_text(encoding="utf-8")) or {}
    changed = [key for key in _diff(saved, current) if not any(key[:len(p)] == p for p in _RESUME_INSENSITIVE)]
    if changed:
        keys = ", ".join(".".join(map(str, key)) for key in changed[:4])
        raise TrainingError(f"cannot resume {run_dir}: the recipe changed since the run started ({keys}); "
                            f"resume with the saved recipe {saved_file}, or start a new run")


def _diff(old: Any, new: Any, prefix: tuple = ()) -> list[tuple]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [key for name in sorted(set(old) | set(new), key=str)
                for key in _diff(old.get(name), new.get(name), (*prefix, name))]
    return [] if old == new else [prefix]


def prune_checkpoints(run_dir: Path) -> None:
    """Delete a finished run's ``checkpoints/`` (the adapter, metrics and plot stay)."""
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)


def write_recipe(run_dir: Path, recipe_yaml: str) -> None:
    (run_dir / RECIPE_FILE).write_text(recipe_yaml, encoding="utf-8")


def write_metrics(run_dir: Path, payload: dict[str, Any]) -> Path:
    path = run_dir / METRICS_FILE
    path.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    return path


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """The final ``metrics`` of a finished run (empty if it has none yet)."""
    path = run_dir / METRICS_FILE
    return json.loads(path.read_text(encoding="utf-8")).get("metrics", {}) if path.is_file() else {}


def loss_curve(history: dict[str, list[dict[str, Any]]], *, points: int = 200) -> list[dict[str, Any]]:
    """The loss history kept in a manifest (the console draws it): at most ``points`` training steps, evenly
    spaced (the last one always kept), then every validation point, each ``{"step", "loss", "split"}``.

    >>> loss_curve({"train": [{"step": s, "loss": 1 / s} for s in range(1, 5)], "validation": []}, points=2)
    [{'step': 1, 'loss': 1.0, 'split': 'train'}, {'step': 4, 'loss': 0.25, 'split': 'train'}]
    """
    train = [row for row in history.get("train") or [] if isinstance(row.get("loss"), (int, float))]
    if len(train) > points > 1:
        train = [train[round(i * (len(train) - 1) / (points - 1))] for i in range(points)]
    return ([{"step": row["step"], "loss": round(row["loss"], 5), "split": "train"} for row in train]
            + [{"step": row["step"], "loss": round(row["loss"], 5), "split": "validation"}
               for row in history.get("validation") or [] if isinstance(row.get("loss"), (int, float))])


def plot_losses(run_dir: Path, history: dict[str, list[dict[str, Any]]], *, title: str) -> Path | None:
    """Save ``loss.png``: training loss per step (and its running mean) with validation loss points."""
    train = history.get("train") or []
    if not train:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [row["step"] for row in train]
    losses = [row["loss"] for row in train]
    window = max(1, len(losses) // 20)
    smooth = [sum(losses[max(0, i - window + 1):i + 1]) / len(losses[max(0, i - window + 1):i + 1])
              for i in range(len(losses))]
    figure, axis = plt.subplots(figsize=(7, 4), dpi=110)
    axis.plot(steps, losses, color="tab:blue", alpha=0.3, linewidth=1, label="train (per step)")
    axis.plot(steps, smooth, color="tab:blue", linewidth=2, label=f"train (mean of {window})")
    validation = history.get("validation") or []
    if validation:
        axis.plot([row["step"] for row in validation], [row["loss"] for row in validation], "o-",
                  color="tab:orange", linewidth=2, label="validation")
    axis.set(xlabel="optimizer step", ylabel="loss (supervised tokens)", title=title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    path = run_dir / PLOT_FILE
    figure.savefig(path)
    plt.close(figure)
    return path
