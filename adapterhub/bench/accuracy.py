"""Time to accuracy: training seconds until validation accuracy first reaches a threshold, ours vs PEFT + Trainer.

Both trainers follow the recipe's own schedule (epochs, lr, scheduler, warm-up,
batch size, seed; the recipe's data pipeline, so the same token ids), each in
its own child process. Every ``eval_every`` optimizer steps (and at the last
step) an :class:`AccuracyProbe` scores the same validation rows with the same
label scorer (:func:`adapterhub.training.evaluate.classify`, the one training's
evaluation uses) and stops training at the first evaluation at or above the
threshold. Its clock counts training only: it starts when the training loop
starts (model loading and optimiser set-up excluded) and is paused while
evaluating; the wall time including evaluations is kept beside it.

Ours is the real recipe :class:`~adapterhub.training.trainer.Trainer` loop
(``setup`` then ``train``) whose validation is the probe and which writes no
checkpoints (the PEFT side saves none either); PEFT's is ``Trainer.train`` with
a callback (:func:`adapterhub.bench.peft_trainer.probe_callback`).

>>> result = measure_time_to_accuracy(config, base_name="smollm2-135m-instruct", device="cpu", skipped=[])  # doctest: +SKIP
>>> result["ours"]["seconds"] <= result["peft"]["seconds"]  # doctest: +SKIP
True
"""

from __future__ import annotations

import math
import tempfile
from typing import Any, Callable, Sequence

from ..training.trainer import Trainer
from .config import BenchConfig
from .harness import Timer
from .isolated import IsolatedRunError, run_isolated
from .training import base_overrides, default_recipe

SIDES = {"ours": "adapterhub.bench.accuracy:time_to_accuracy_with_recipe",
         "peft": "adapterhub.bench.peft_trainer:time_to_accuracy_with_peft_trainer"}


def measure_time_to_accuracy(config: BenchConfig, *, base_name: str, device: str,
                             skipped: list[dict[str, str]]) -> dict[str, Any]:
    """Train with both trainers until the threshold (or the end of the schedule) and compare their times.

    Args:
        config: the run's configuration (threshold, evaluation interval and rows, recipe).
        base_name: the base both train on.
        device: the resolved device.
        skipped: gets a record for every trainer that could not run (and why).

    Returns:
        ``{"recipe", "threshold", "eval_every", "eval_rows", "ours": {...}, "peft": {...}}`` (a side that
        failed is absent; see :meth:`AccuracyProbe.result` for each side) and, when both reached the
        threshold, ``"time_ratio"`` (ours ÷ PEFT training seconds) and ``"speedup_vs_peft"`` (its inverse).
    """
    import torch

    recipe = config.train_recipe or default_recipe()
    if recipe is None:
        skipped.append({"area": "accuracy", "case": "both", "reason": "no recipe: the shipped finance recipe is not "
                        "in this checkout; pass train_recipe= (or run from the adapterhub project folder)"})
        return {}
    settings = {"recipe": str(recipe), "overrides": base_overrides(config, base_name=base_name, device=device),
                "threshold": config.accuracy_threshold, "eval_every": config.accuracy_eval_every,
                "eval_rows": config.accuracy_eval_rows, "max_steps": config.accuracy_max_steps,
                "threads": config.threads or torch.get_num_threads()}  # the children run on the report's threads
    result: dict[str, Any] = {"recipe": str(recipe), "threshold": config.accuracy_threshold,
                              "eval_every": config.accuracy_eval_every, "eval_rows": config.accuracy_eval_rows,
                              "max_steps": config.accuracy_max_steps, "threads": settings["threads"],
                              "quick": config.quick}
    for label, target in SIDES.items():
        try:
            result[label] = run_isolated(target, settings)
        except IsolatedRunError as error:
            skipped.append({"area": "accuracy", "case": label, "reason": str(error)})
    ours, peft = result.get("ours") or {}, result.get("peft") or {}
    if ours.get("reached") and peft.get("reached"):
        result["time_ratio"] = ours["seconds"] / peft["seconds"]
        result["speedup_vs_peft"] = peft["seconds"] / ours["seconds"]
    return result


class AccuracyProbe:
    """One side's training clock and validation evaluations.

    Args:
        score: the validation accuracy of a model (the same rows and scorer on both sides).
        threshold: the accuracy that stops training.
        every: evaluate after every ``every``-th optimizer step (and after the last one).
        total_steps: the schedule's optimizer steps.
        timer: the clock (a :class:`~adapterhub.bench.harness.Timer`; CUDA-synchronising on a GPU).
        rows: how many validation rows ``score`` scores (reported).
    """

    def __init__(self, score: Callable[[Any], float], *, threshold: float, every: int, total_steps: int,
                 timer: Any = None, rows: int | None = None) -> None:
        self.score, self.threshold, self.every, self.total_steps = score, threshold, every, total_steps
        self.rows = rows
        self.timer = timer or Timer()
        self.started: float | None = None
        self.paused = 0.0  # seconds spent evaluating
        self.tokens = 0
        self.curve: list[dict[str, Any]] = []
        self.reached: dict[str, Any] | None = None

    def start(self) -> None:
        """The training loop starts: the clock runs from now."""
        self.started, self.paused = self.timer.now(), 0.0

    def count(self, tokens: int) -> None:
        """Add the non-padding input tokens of a training batch."""
        self.tokens += tokens

    def due(self, step: int) -> bool:
        """Whether optimizer step ``step`` (1-based) is followed by an evaluation."""
        return step % self.every == 0 or step >= self.total_steps

    def evaluate(self, step: int, model: Any, *, tokens: int | None = None) -> bool:
        """Score ``model`` after ``step`` with the clock paused; ``True`` once the threshold is reached.

        ``tokens``: the training tokens so far (default: those given to :meth:`count`).
        """
        if self.started is None:
            raise RuntimeError("AccuracyProbe.evaluate before start()")
        paused_at = self.timer.now()
        seconds = paused_at - self.started - self.paused
        accuracy = float(self.score(model))
        resumed_at = self.timer.now()
        self.paused += resumed_at - paused_at
        point = {"step": step, "accuracy": accuracy, "seconds": seconds, "wall_seconds": resumed_at - self.started,
                 "tokens": self.tokens if tokens is None else tokens}
        self.curve.append(point)
        if self.reached is None and accuracy >= self.threshold:
            self.reached = point
        return self.reached is not None

    def result(self) -> dict[str, Any]:
        """What the side reports.

        Returns:
            ``reached``; to the threshold (``None`` when never reached): ``seconds`` (training only),
            ``wall_seconds`` (evaluations included), ``steps``, ``tokens``; ``best_accuracy`` and
            ``best_step``; ``steps_run``, ``train_seconds`` and ``eval_seconds`` of the whole run;
            ``evaluations``; ``curve``: every evaluation's ``step``, ``accuracy``, ``seconds``,
            ``wall_seconds`` and ``tokens``.
        """
        reached, last = self.reached or {}, (self.curve[-1] if self.curve else {})
        best = max(self.curve, key=lambda point: point["accuracy"], default={})
        return {"reached": self.reached is not None, "threshold": self.threshold,
                **{key: reached.get(key) for key in ("seconds", "wall_seconds", "tokens")}, "steps": reached.get("step"),
                "best_accuracy": best.get("accuracy"), "best_step": best.get("step"),
                "steps_run": last.get("step"), "train_seconds": last.get("seconds"), "eval_seconds": self.paused,
                "evaluations": len(self.curve), "eval_every": self.every, "eval_rows": self.rows,
                "total_steps": self.total_steps,
                "curve": list(self.curve)}


def probe_for(dataset: Any, tokenizer: Any, training: Any, *, threshold: float, eval_rows: int | None,
              total_steps: int, device: Any) -> AccuracyProbe:
    """The probe of one side: the first ``eval_rows`` validation rows, label-scored in ``training.eval_batch_size``
    batches, every ``training.eval_every`` steps."""
    rows = validation_rows(dataset, eval_rows)
    scorer = accuracy_scorer(dataset.task, rows, tokenizer, batch_size=training.eval_batch_size, device=device)
    return AccuracyProbe(scorer, threshold=threshold, every=training.eval_every, total_steps=total_steps,
                         timer=Timer(str(device)), rows=len(rows))


def accuracy_scorer(task: Any, rows: Sequence[dict[str, Any]], tokenizer: Any, *, batch_size: int,
                    device: Any) -> Callable[[Any], float]:
    """``score(model)``: the accuracy of a PEFT model on ``rows`` by training's label scoring."""
    from ..training.evaluate import classify, label_metrics

    texts, references = [str(row["text"]) for row in rows], [str(row["label"]) for row in rows]

    def score(model: Any) -> float:
        predictions = classify(model, tokenizer, task, texts, batch_size=batch_size, device=device)
        return label_metrics(predictions, references, labels=task.labels)["accuracy"]

    return score


def validation_rows(dataset: Any, count: int | None) -> list[dict[str, Any]]:
    """The first ``count`` validation rows (all with ``None``) of a classification recipe's data.

    Raises:
        ValueError: the recipe is not a classification recipe or has no validation rows.
    """
    if not dataset.task.is_classification or dataset.validation is None or not dataset.validation.rows:
        raise ValueError("time to accuracy needs a classification recipe with validation rows "
                         "(data.validation or data.validation_split)")
    return list(dataset.validation.rows[:count])


def schedule(training: Any, total_steps: int) -> dict[str, Any]:
    """The recipe's optimisation settings as both sides apply them (warm-up steps as our trainer rounds them)."""
    return {"total_steps": total_steps, "epochs": training.epochs, "max_steps": training.max_steps,
            "batch_size": training.batch_size, "gradient_accumulation_steps": training.gradient_accumulation_steps,
            "lr": training.lr, "scheduler": training.scheduler, "warmup_steps": warmup_steps(training, total_steps),
            "seed": training.seed}


def warmup_steps(training: Any, total_steps: int) -> int:
    """``training.warmup_steps``, else ``warmup_ratio`` of the steps rounded up (as our trainer does)."""
    return training.warmup_steps if training.warmup_steps is not None else math.ceil(
        training.warmup_ratio * total_steps)


def probed_overrides(overrides: Sequence[str], *, eval_every: int, max_steps: int | None) -> list[str]:
    """The bench's overrides plus the evaluation interval and the optional step cap."""
    return [*overrides, f"training.eval_every={eval_every}", *([f"training.max_steps={max_steps}"] if max_steps else [])]


class ProbedTrainer(Trainer):
    """Our recipe trainer whose validation is an :class:`AccuracyProbe` (stopping at its threshold), without
    checkpoints; ``train`` is the trainer's own loop."""

    def __init__(self, recipe: Any, *, threshold: float, eval_rows: int | None, **options: Any) -> None:
        super().__init__(recipe, **options)
        self.threshold, self.eval_rows = threshold, eval_rows
        self.probe: AccuracyProbe | None = None

    def setup(self) -> None:
        super().setup()
        self.probe = probe_for(self.data, self.base.tokenizer, self.recipe.training, threshold=self.threshold,
                               eval_rows=self.eval_rows, total_steps=self.total_steps, device=self.accelerator.device)

    def train(self) -> None:
        self.probe.start()
        super().train()

    def _validate(self) -> None:  # the loop calls it every eval_every steps and after the last one
        if self.probe.evaluate(self.step, self.peft_model, tokens=self.train_tokens):
            self.stopped_early = True

    def _save_checkpoint(self) -> Any:
        return None


def time_to_accuracy_with_recipe(*, recipe: str, overrides: Sequence[str], threshold: float, eval_every: int,
                                 eval_rows: int | None = None, max_steps: int | None = None,
                                 threads: int | None = None) -> dict[str, Any]:
    """Our trainer on ``recipe`` until validation accuracy reaches ``threshold`` (child-process entry).

    Returns:
        :meth:`AccuracyProbe.result` plus ``"schedule"`` (:func:`schedule`).
    """
    import torch

    from ..training import load_recipe

    if threads:
        torch.set_num_threads(threads)
    plan = load_recipe(recipe, overrides=probed_overrides(overrides, eval_every=eval_every, max_steps=max_steps))
    with tempfile.TemporaryDirectory(prefix="adapterhub-bench-accuracy-") as folder:
        trainer = ProbedTrainer(plan, threshold=threshold, eval_rows=eval_rows, run_dir=folder, progress=False)
        try:
            trainer.setup()
            trainer.train()
        finally:
            trainer.cleanup()
    return {**trainer.probe.result(), "schedule": schedule(plan.training, trainer.total_steps)}
