"""Training comparison: our recipe trainer vs plain PEFT + transformers ``Trainer``.

Both follow one recipe (the shipped finance recipe unless told otherwise):
same examples, LoRA settings, optimiser, batch size and seed, for the same
number of optimizer steps after the same warm-up steps. Each runs in its own
child process, so peak memory is per trainer. Throughput counts the
non-padding input tokens of the timed steps per second.

>>> result = measure_training(config, base_name="smollm2-135m-instruct", device="cpu", skipped=[])  # doctest: +SKIP
>>> result["speedup_vs_peft"] > 0  # doctest: +SKIP
True
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from ..paths import project_root
from .config import BenchConfig
from .isolated import IsolatedRunError, run_isolated

DEFAULT_RECIPE = Path("recipes") / "finance.yaml"
TRAINERS = {"ours": "adapterhub.bench.training:train_with_recipe",
            "peft": "adapterhub.bench.peft_trainer:train_with_peft_trainer"}


def default_recipe() -> Path | None:
    """The shipped finance recipe of the checkout we run in (or of this source tree), if there is one."""
    for root in (project_root(), Path(__file__).resolve().parents[2]):
        if root is not None and (root / DEFAULT_RECIPE).is_file():
            return root / DEFAULT_RECIPE
    return None


def base_overrides(config: BenchConfig, *, base_name: str, device: str) -> list[str]:
    """Overrides that put a trainer on the bench's base, dtype, quantisation and device (``--quick``'s tiny
    model has 2 layers: there the recipe's ``adapter.last_layers`` gives way to every layer)."""
    tiny = ["adapter.last_layers=null"] if config.quick else []
    return [f"base.model={base_name}", f"base.dtype={config.dtype}", f"base.quantize={config.quantize or 'null'}",
            f"base.device={device}", *tiny]


def recipe_overrides(config: BenchConfig, *, base_name: str, device: str) -> list[str]:
    """Overrides that put both trainers on the bench's base, dtype, quantisation, device and batch size."""
    return [*base_overrides(config, base_name=base_name, device=device), f"training.batch_size={config.train_batch}"]


def measure_training(config: BenchConfig, *, base_name: str, device: str,
                     skipped: list[dict[str, str]]) -> dict[str, Any]:
    """Train with both trainers and compare tokens/s and peak memory.

    Args:
        config: the run's configuration (steps, warm-up, batch size, recipe).
        base_name: the base both train on.
        device: the resolved device.
        skipped: gets a record for every trainer that could not run (and why).

    Returns:
        ``{"recipe", "steps", "warmup", "batch_size", "repeats", "ours": {...}, "peft": {...}, "speedup_vs_peft",
        "memory_ratio"}``; each side is its median run (``tokens_per_s_runs`` lists all); a trainer that
        failed is absent.
    """
    recipe = config.train_recipe or default_recipe()
    if recipe is None:
        skipped.append({"area": "training", "case": "both", "reason": f"no recipe: {DEFAULT_RECIPE} is not in this "
                        "checkout; pass train_recipe= (or run from the adapterhub project folder)"})
        return {}
    settings = {"recipe": str(recipe), "overrides": recipe_overrides(config, base_name=base_name, device=device),
                "steps": config.train_steps, "warmup": min(config.warmup, 2), "threads": config.threads}
    result: dict[str, Any] = {"recipe": str(recipe), "steps": config.train_steps, "warmup": settings["warmup"],
                              "batch_size": config.train_batch}
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in TRAINERS}
    failed: set[str] = set()
    for _ in range(config.train_repeats):  # alternating, so drift of the machine hits both trainers alike
        for label, target in TRAINERS.items():
            if label in failed:
                continue
            try:
                runs[label].append(run_isolated(target, settings))
            except IsolatedRunError as error:
                skipped.append({"area": "training", "case": label, "reason": str(error)})
                failed.add(label)
    for label, measured in runs.items():
        if measured:
            result[label] = _median_run(measured)
    result["repeats"] = config.train_repeats
    if "ours" in result and "peft" in result:
        result["speedup_vs_peft"] = result["ours"]["tokens_per_s"] / result["peft"]["tokens_per_s"]
        result["memory_ratio"] = result["ours"]["peak_bytes"] / result["peft"]["peak_bytes"]
    return result


def _median_run(measured: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median tokens/s, with every run's tokens/s and the highest peak memory beside it."""
    ranked = sorted(measured, key=lambda run: run["tokens_per_s"])
    return {**ranked[(len(ranked) - 1) // 2], "tokens_per_s_runs": [run["tokens_per_s"] for run in measured],
            "peak_bytes": max(run["peak_bytes"] for run in measured)}


def train_with_recipe(*, recipe: str, overrides: Sequence[str], steps: int, warmup: int,
                      threads: int | None = None, before_timing: Callable[[], None] | None = None) -> dict[str, Any]:
    """Our trainer on ``recipe``: ``warmup`` untimed steps, then ``steps`` timed ones (child-process entry).

    ``threads``: ``torch.set_num_threads`` first (``None``: leave them); ``before_timing``: called
    between the warm-up and the timed steps (see :func:`~adapterhub.training.dry_run.measure_throughput`).

    Returns:
        ``{"tokens_per_s", "tokens", "seconds", "steps", "peak_bytes"}`` as the baseline reports them.
    """
    import torch

    from ..training.dry_run import measure_throughput

    if threads:
        torch.set_num_threads(threads)
    measured = measure_throughput(recipe, steps=steps, warmup=warmup, overrides=list(overrides),
                                  before_timing=before_timing)
    peak = measured["peak_memory_bytes"]
    return {"tokens_per_s": measured["tokens_per_second"], "tokens": measured["tokens"],
            "seconds": measured["seconds"], "steps": measured["steps"], "peak_bytes": peak}
