"""Training comparison: our recipe trainer vs plain PEFT + transformers ``Trainer``.

Both train the same LoRA adapter on the same data with the same optimiser
settings for the same number of steps, each in its own child process (so
peak memory is per trainer). Throughput counts the non-padding tokens each
trainer processed per second of its training loop.

>>> result = measure_training(config, base_name="smollm2-135m-instruct", device="cpu", skipped=[])  # doctest: +SKIP
>>> result["speedup_vs_peft"] > 0  # doctest: +SKIP
True
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..paths import project_root
from .config import BenchConfig
from .isolated import run_isolated
from .peft_trainer import TrainSetup

DEFAULT_RECIPE = Path("recipes") / "finance.yaml"


def default_recipe() -> Path | None:
    """The shipped finance recipe of the checkout we run in, if there is one."""
    for root in (project_root(), Path(__file__).resolve().parents[2]):
        if root is not None and (root / DEFAULT_RECIPE).is_file():
            return root / DEFAULT_RECIPE
    return None


def measure_training(config: BenchConfig, *, base_name: str, device: str,
                     skipped: list[dict[str, str]]) -> dict[str, Any]:
    """Train with both trainers and compare tokens/s and peak memory.

    Args:
        config: the run's configuration (steps, batch size, recipe).
        base_name: the base both train on.
        device: resolved device.
        skipped: gets a record for every side that could not run.
    """
    setup = shared_setup(config, base_name=base_name, device=device)
    result: dict[str, Any] = {"steps": setup.steps, "batch_size": setup.batch_size, "data": setup.train_file,
                              "setup": setup.to_dict()}
    result["peft"] = run_isolated("adapterhub.bench.peft_trainer:train_with_peft_trainer", setup.to_dict())
    skipped.append({"area": "training", "case": "ours",
                    "reason": "adapterhub.train.train / adapterhub.recipe.load_recipe have not landed on this branch"})
    if "ours" in result:
        result["speedup_vs_peft"] = result["ours"]["tokens_per_s"] / result["peft"]["tokens_per_s"]
    return result


def shared_setup(config: BenchConfig, *, base_name: str, device: str) -> TrainSetup:
    """The settings both trainers follow."""
    root = project_root() or Path(__file__).resolve().parents[2]
    return TrainSetup(
        base=base_name, dtype=config.dtype, quantize=config.quantize, device=device, threads=config.threads,
        train_file=str(root / "recipes" / "data" / "finance" / "train.jsonl"),
        task={"type": "classification", "labels": ["positive", "negative", "neutral"],
              "prompt_template": "Classify the sentiment of this financial news sentence as one of: {labels}.\n\n{text}"},
        rank=config.rank, alpha=2 * config.rank, dropout=0.05, target_modules="all-linear", learning_rate=2e-4,
        scheduler="linear", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, steps=config.train_steps,
        batch_size=config.train_batch, max_length=config.train_max_length, seed=0)
