"""Look at a recipe without producing an adapter: check its data, or measure its training speed.

>>> check_recipe("recipes/finance.yaml")["train"]["rows"]  # doctest: +SKIP
252
>>> measure_throughput("recipes/finance.yaml", steps=5)["tokens_per_second"]  # doctest: +SKIP
412.3
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

from .data import load_dataset
from ..memory import peak_rss_bytes
from .recipe import Recipe
from .recipe_files import load_recipe
from .batching import plan_steps
from .trainer import Trainer


def measure_throughput(recipe: str | Path | dict[str, Any] | Recipe, *, steps: int = 10, warmup: int = 2,
                       overrides: Sequence[str] = (),
                       before_timing: Callable[[], None] | None = None) -> dict[str, Any]:
    """Training speed of a recipe: tokens/s over ``steps`` optimizer steps after ``warmup`` steps.

    Nothing is evaluated, saved or registered. Tokens are real (non-padding) input tokens;
    the time is wall-clock around whole steps, batch building included. With a frozen trunk
    (``adapter.last_layers``) the trunk's one forward over the training rows happens in the first
    step; the timed seconds are charged their share of it, ``steps / the recipe's total steps``,
    which is what it adds to each step of a real run. ``before_timing`` is called after the
    warm-up, right before the clock starts (the benchmark's concurrent trainings wait there for
    each other).

    Returns:
        ``{"tokens_per_second", "tokens", "seconds", "steps", "trunk_seconds", "peak_memory_bytes", "memory",
        "device"}``; ``trunk_seconds`` is the whole trunk forward (0 without one); ``memory`` says what the
        peak is: ``"cuda_max_allocated"`` or ``"process_peak_rss"`` (CPU, ``VmHWM``).

    It is the function the benchmark calls to compare against a plain PEFT + ``transformers.Trainer``
    loop; run each measurement in a fresh process when comparing CPU peak memory.
    """
    import tempfile

    import torch

    whole_run = load_recipe(recipe, overrides=overrides).training
    recipe = load_recipe(recipe, overrides=[*overrides, f"training.max_steps={steps + warmup}"])
    with tempfile.TemporaryDirectory(prefix="adapterhub-throughput-") as folder:
        trainer = Trainer(recipe, run_dir=folder, progress=False)
        try:
            trainer.setup()
            for _ in range(warmup):
                trainer.train_step()
            cuda = trainer.accelerator.device.type == "cuda"
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            if before_timing is not None:
                before_timing()
            tokens, started = trainer.train_tokens, time.perf_counter()
            for _ in range(steps):
                trainer.train_step()
            if cuda:
                torch.cuda.synchronize()
            seconds, tokens = time.perf_counter() - started, trainer.train_tokens - tokens
            trunk_seconds = trainer.trunk.seconds if trainer.trunk is not None else 0.0
            total_steps = plan_steps(len(trainer.data.train.examples), whole_run,
                                     world=trainer.accelerator.num_processes)[2]
            seconds += trunk_seconds * min(1.0, steps / total_steps)
        finally:
            trainer.cleanup()
    peak = torch.cuda.max_memory_allocated() if cuda else peak_rss_bytes()
    return {"tokens_per_second": round(tokens / seconds, 1), "tokens": tokens, "seconds": round(seconds, 3),
            "steps": steps, "trunk_seconds": round(trunk_seconds, 3), "peak_memory_bytes": int(peak),
            "memory": "cuda_max_allocated" if cuda else "process_peak_rss", "device": str(trainer.accelerator.device)}


def check_recipe(recipe: str | Path | dict[str, Any] | Recipe, *, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Validate a recipe and its data without training (loads only the base tokenizer).

    Returns:
        A summary: rows and tokens per split, label counts, the longest example, steps.

    Raises:
        RecipeError, DataError, BaseModelError: whatever :func:`train` would raise before training.
    """
    from collections import Counter

    from transformers import AutoTokenizer

    from ..base.loading import resolve

    recipe = load_recipe(recipe, overrides=overrides)
    _, path = resolve(recipe.base.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dataset = load_dataset(recipe, tokenizer)
    _, steps_per_epoch, total_steps = plan_steps(len(dataset.train.examples), recipe.training)
    summary: dict[str, Any] = {"name": recipe.name, "task": dataset.task.type, "method": recipe.adapter.method,
                               "base": recipe.base.model, "steps_per_epoch": steps_per_epoch, "total_steps": total_steps}
    for name in ("train", "validation", "test"):
        split = getattr(dataset, name)
        if split is None:
            continue
        entry: dict[str, Any] = {"rows": len(split.rows), "tokens": split.num_tokens,
                                 "longest": max(len(e) for e in split.examples), "origin": split.origin}
        if dataset.task.is_classification or dataset.task.type == "sequence_classification":
            entry["labels"] = dict(Counter(str(row["label"]) for row in split.rows))
        elif dataset.task.type == "token_classification":  # entities per type
            entry["labels"] = dict(Counter(e["label"] for row in split.rows for e in row["entities"]))
        summary[name] = entry
    from .data_check import label_warnings, settings_warnings

    counts = {name: summary[name]["labels"] for name in ("train", "validation", "test") if "labels" in summary.get(name, {})}
    summary["warnings"] = [*settings_warnings(recipe), *label_warnings(recipe, counts)]
    return summary
