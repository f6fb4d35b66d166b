"""Train a domain adapter from a recipe: ``train(recipe) -> TrainResult``.

Read it top to bottom, like the run itself:

1. **setup** — accelerator, seed, the frozen base (quantised for QLoRA), the data,
   the PEFT adapter, AdamW with its schedule, the run directory, and (with
   ``resume``) the last checkpoint.
2. **train** — with ``adapter.last_layers``, first the frozen layers below the adapted ones
   run once over the training rows and their outputs are kept
   (:mod:`~adapterhub.training.trunk`); then optimizer steps over length-grouped (or packed) micro-batches;
   the loss covers the answer tokens only and the LM head runs at those
   positions only (:class:`~adapterhub.training.lm_loss.SupervisedLM`); gradient
   accumulation and clipping; validation, checkpoints and early stopping at
   their intervals; a progress bar with loss and tokens/s. Ctrl-C finishes
   the current step, saves a checkpoint and stops; a NaN loss stops at once.
3. **finish** — the best adapter goes to ``<run>/adapter``, is evaluated on
   validation (and ``data.test``), metrics and the loss plot are written, and
   the adapter is registered (then optionally pushed to the Hub). Nothing is
   registered when anything before this fails.
4. **cleanup** — restore the Ctrl-C handler, close the progress bar.

Decoder and encoder recipes run the same loop; what differs — the model, batches, loss, evaluation,
plots — is the run's task (:mod:`adapterhub.training.task`: :mod:`~adapterhub.training.decoder_task` or
:mod:`~adapterhub.training.encoder_task`). What a data-parallel run shares between processes is
:mod:`adapterhub.training.distributed`.

Data-parallel multi-GPU needs no changes: ``accelerate launch -m adapterhub train RECIPE``.

>>> result = train("recipes/finance.yaml")  # doctest: +SKIP
>>> result.record.ref, result.metrics["validation"]["accuracy"], result.run_dir  # doctest: +SKIP
('finance@1', 0.95, PosixPath('runs/finance-20261127-151800'))
"""

from __future__ import annotations

import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .. import methods
from ..cpu import rebalance
from ..errors import BelowBaselineError, TrainingError
from . import checkpoint, run_dir as runs
from .baseline import check_before_registering
from .batching import plan_batches, plan_steps
from .data import load_dataset
from .data_check import precheck
from .distributed import any_process, from_main, sum_over_processes
from .grad_guard import guard_4bit_gradients
from .interrupt import CtrlC
from .publish import describe_adapter_dir, push_adapter, register_adapter
from .recipe import Recipe
from .recipe_files import load_recipe
from .task import training_task


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` made: the registered record, the run folder and the final metrics."""

    record: Any  # AdapterRecord, or None when nothing was registered
    run_dir: Path
    metrics: dict[str, Any]  # validation / test (/ base) metrics, as in the run's metrics.json


def train(recipe: str | Path | dict[str, Any] | Recipe, *, overrides: Sequence[str] = (), resume: bool = False,
          run_dir: str | Path | None = None, registry: Any = None, progress: bool = True,
          runs_root: str | Path | None = None) -> TrainResult:
    """Train, evaluate and register an adapter.

    Args:
        recipe: a recipe file, dict or :class:`~adapterhub.training.recipe.Recipe`.
        overrides: ``"section.key=value"`` strings (as ``--set`` on the command line).
        resume: continue the newest run of this recipe (or ``run_dir``) from its last checkpoint.
        run_dir: the run folder (default ``output.run_dir`` or ``<runs_root>/<name>-<timestamp>``).
        registry: a :class:`~adapterhub.registry.Registry` (default: ``output.registry``).
        progress: show progress bars (training, then each evaluation) on stderr.
        runs_root: the folder new run folders go in (default ``runs/`` under the current directory).

    Returns:
        A :class:`TrainResult`: the registered record (``None`` with
        ``output.register_on_success: false``, and on other ranks than the first under
        ``accelerate launch``), the run folder and the final metrics.

    Raises:
        RecipeError, DataError, BaseModelError: bad recipe, data or base (before training starts).
        TrainingError: NaN loss, Ctrl-C (a checkpoint is saved first), or an unusable checkpoint.
    """
    trainer = Trainer(load_recipe(recipe, overrides=overrides), run_dir=run_dir, resume=resume, progress=progress,
                      runs_root=runs_root)
    try:
        trainer.setup()
        trainer.train()
        return trainer.finish(registry=registry)
    finally:
        trainer.cleanup()


class Trainer:
    """One training run; :func:`train` drives it (``setup → train → finish → cleanup``)."""

    def __init__(self, recipe: Recipe, *, run_dir: str | Path | None = None, resume: bool = False,
                 progress: bool = True, runs_root: str | Path | None = None):
        self.recipe, self.resume, self.progress = recipe, resume, progress
        self.requested_run_dir = run_dir or recipe.output.run_dir
        self.runs_root = runs_root
        self.step = 0
        self.history: dict[str, list[dict[str, Any]]] = {"train": [], "validation": []}
        self.best: dict[str, Any] = {"score": None, "step": None, "metrics": None, "bad_evals": 0}
        self.best_state = None
        self.stopped_early = False
        self.train_seconds, self.train_tokens = 0.0, 0
        self.ctrl_c = CtrlC(self._note_interrupt)
        self._bar: Any = None
        self._epoch_plan: tuple[int, list[list[int]]] | None = None
        self.hook: methods.TrainingHook | None = None

    # --- 1. setup -------------------------------------------------------------------------------------------
    def setup(self) -> None:
        import torch

        training = self.recipe.training
        self.accelerator = self._setup_accelerator()
        torch.manual_seed(training.seed)
        warnings = precheck(self.recipe)  # the data's mistakes, before the base takes seconds to load
        for warning in warnings if self.progress and self.accelerator.is_main_process else ():
            print(f"warning: {warning}", file=sys.stderr)
        self.base = self._setup_base()
        self.task = training_task(self.recipe, self.base, label=self._progress_label)  # decoder or encoder
        self.data = load_dataset(self.recipe, self.base.tokenizer)
        self.peft_model = self._setup_adapter()
        self.grad_guard = guard_4bit_gradients(self.peft_model)  # 4-bit layers never pack; gradients checked once
        self.optimizer, self.scheduler = self._setup_optimizer()
        self.hook = methods.training_hook(methods.get(self.recipe.adapter.method), self.peft_model, self.recipe,
                                          self.total_steps)  # per-step work of the method (AdaLoRA's budget)
        loss_model = self.task.loss_model(self.peft_model)
        self.trunk = self.task.trunk  # frozen first layers (decoders): run once per row, kept
        self.model, self.optimizer = self.accelerator.prepare(loss_model, self.optimizer)
        self.run_dir = self._setup_run_dir()
        if self.resume:
            self._restore(checkpoint.latest_checkpoint(self.run_dir))  # last: it also restores the RNG
        self.ctrl_c.install()

    def _setup_accelerator(self) -> Any:
        from accelerate import Accelerator

        return Accelerator(cpu=self.recipe.base.device == "cpu", device_placement=False)

    def _setup_base(self) -> Any:
        from ..base.loading import load_base

        section = self.recipe.base
        distributed = self.accelerator.num_processes > 1
        device = section.device
        if section.device == "auto" or distributed:
            device = "cpu" if self.accelerator.device.type == "cpu" else str(self.accelerator.device)
        base = load_base(section.model, quantize=section.quantize, double_quant=section.double_quant,
                         keep_full_precision=section.keep_full_precision, dtype=section.dtype, device=device,
                         progress=self.progress)
        base.linear_shapes  # noqa: B018 -- record the clean module shapes before PEFT wraps them (registry checks)
        return base

    def _setup_adapter(self) -> Any:
        """The trainable model: the task's PEFT model over the base, in train mode."""
        return self.task.build_model()

    def _setup_optimizer(self) -> tuple[Any, Any]:
        import torch
        from transformers import get_scheduler

        training = self.recipe.training
        self.trainable = [p for p in self.peft_model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(self.trainable, lr=training.lr, betas=training.adam_betas,
                                      weight_decay=training.weight_decay)
        self.micro_per_step, self.steps_per_epoch, self.total_steps = plan_steps(
            len(self.data.train.examples), self.recipe.training, world=self.accelerator.num_processes)
        warmup = training.warmup_steps if training.warmup_steps is not None else math.ceil(
            training.warmup_ratio * self.total_steps)
        scheduler = get_scheduler(training.scheduler, optimizer, num_warmup_steps=warmup,
                                  num_training_steps=self.total_steps)
        return optimizer, scheduler

    def _setup_run_dir(self) -> Path:
        if self.resume:
            path = runs.find_resumable(self.recipe.name, self.requested_run_dir, root=self.runs_root)
            runs.check_same_recipe(path, self.recipe.to_dict())
            return path
        path = None
        if self.accelerator.is_main_process:
            path = runs.new_run_dir(self.recipe.name, self.requested_run_dir, root=self.runs_root)
            runs.write_recipe(path, self.recipe.to_yaml())
        return from_main(self.accelerator, path)

    def _restore(self, folder: Path) -> None:
        state, self.best_state = checkpoint.load_checkpoint(folder, peft_model=self.peft_model,
                                                            optimizer=self.optimizer, scheduler=self.scheduler)
        self.step, self.history, self.best = state["step"], state["history"], state["best"]
        self.stopped_early = state["stopped_early"]
        self.train_seconds, self.train_tokens = state["train_seconds"], state["train_tokens"]

    def _note_interrupt(self) -> None:
        if self._bar is not None:
            self._bar.write("interrupt: finishing this step and saving a checkpoint (Ctrl-C again to abort)")

    # --- 2. train -------------------------------------------------------------------------------------------
    def train(self) -> None:
        from tqdm.auto import tqdm

        if self.step < self.total_steps:  # e.g. the frozen layers, once for every epoch
            self.train_seconds += self.task.before_training(self.data.train.examples)  # part of training's time
        self._bar = tqdm(total=self.total_steps, initial=self.step, unit="step", dynamic_ncols=True,
                         desc=f"train {self.recipe.name}", disable=not (self.progress and self.accelerator.is_main_process))
        try:
            while self.step < self.total_steps and not self.stopped_early:
                row = self.train_step()
                self._bar.update(1)
                self._bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}",
                                      tok_s=f"{self.train_tokens / max(self.train_seconds, 1e-9):.0f}")
                last = self.step == self.total_steps
                if self._due(self.recipe.training.eval_every) or last:
                    self._validate()
                if any_process(self.accelerator, self.ctrl_c.requested):
                    path = self._save_checkpoint()
                    raise TrainingError(f"interrupted at step {self.step}/{self.total_steps}; nothing was registered. "
                                        f"Checkpoint saved in {path}; continue with --resume --run-dir {self.run_dir}")
                if self._due(self.recipe.training.save_every) or last or self.stopped_early:
                    self._save_checkpoint()
        except KeyboardInterrupt:
            last = checkpoint.latest_checkpoint(self.run_dir)
            raise TrainingError(f"aborted at step {self.step}; nothing was registered; last checkpoint: "
                                f"{last or 'none'}") from None
        finally:
            self._bar.close()  # a finished bar stays as it finished; evaluation draws its own

    def train_step(self) -> dict[str, Any]:
        """One optimizer step (all its micro-batches); appends to and returns the history row."""
        import torch

        rebalance()  # other adapterhub processes came or went: keep this one at its share of the cores
        started = time.perf_counter()
        batches = [self.task.batch(self.data.train.examples, indices) for indices in self._micro_batches()]
        targets = sum_over_processes(self.accelerator, sum(int(batch.targets.numel()) for batch in batches))
        scale = self.accelerator.num_processes / targets  # DDP averages gradients over processes
        loss_sum = 0.0
        for number, batch in enumerate(batches, 1):
            sync = number == len(batches)
            with nullcontext() if sync else self.accelerator.no_sync(self.model):
                loss = self.model(**self.task.batch_inputs(batch.to(self.accelerator.device)))
                if not torch.isfinite(loss):
                    raise TrainingError(f"loss became {loss.item()} at step {self.step + 1}; nothing was registered. "
                                        f"Lower training.lr (now {self.recipe.training.lr}) or set training.max_grad_norm")
                scaled = loss * scale
                extra = self.hook.extra_loss() if sync and self.hook is not None else None
                self.accelerator.backward(scaled if extra is None else scaled + extra)
            loss_sum += float(loss.detach())
        loss_sum = sum_over_processes(self.accelerator, loss_sum)
        grad_norm = None
        if self.recipe.training.max_grad_norm is not None:
            grad_norm = float(self.accelerator.clip_grad_norm_(self.trainable, self.recipe.training.max_grad_norm))
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        if self.hook is not None:
            self.hook.after_step(self.step + 1)
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        seconds = time.perf_counter() - started
        tokens = int(sum_over_processes(self.accelerator, sum(batch.num_tokens for batch in batches)))
        self.train_seconds += seconds
        self.train_tokens += tokens
        row = {"step": self.step, "epoch": round(self.step / self.steps_per_epoch, 4), "loss": loss_sum / targets,
               "lr": lr, "grad_norm": grad_norm, "tokens": tokens, "tokens_per_second": tokens / max(seconds, 1e-9)}
        self.history["train"].append(row)
        return row

    def _micro_batches(self) -> list[list[int]]:
        """This process's micro-batches (example indices) for the current step: a pure function of the step."""
        epoch, index = divmod(self.step, self.steps_per_epoch)
        if self._epoch_plan is None or self._epoch_plan[0] != epoch:
            lengths = [len(example) for example in self.data.train.examples]
            plan = plan_batches(lengths, batch_size=self.recipe.training.batch_size, seed=self.recipe.training.seed,
                                epoch=epoch, group_by_length=not self.recipe.data.packing)
            plan = plan[:len(plan) - len(plan) % self.accelerator.num_processes] if self.accelerator.num_processes > 1 else plan
            self._epoch_plan = (epoch, plan)
        step_batches = self._epoch_plan[1][index * self.micro_per_step:(index + 1) * self.micro_per_step]
        return step_batches[self.accelerator.process_index::self.accelerator.num_processes]

    def _due(self, every: int | None) -> bool:
        return self.step % every == 0 if every else self.step % self.steps_per_epoch == 0

    def _validate(self) -> None:
        """Evaluate on validation; track the best adapter and early stopping."""
        if self.data.validation is None:
            return
        stopping = self.recipe.training.early_stopping
        metrics = self._evaluate(self.data.validation, accuracy=stopping.metric != "loss",
                                 progress=self._progress_label(f"validate at step {self.step}"), leave=False)
        self.history["validation"].append({"step": self.step, **{k: v for k, v in metrics.items()
                                                                 if not isinstance(v, (dict, list))}})
        score = -metrics["loss"] if stopping.metric == "loss" else metrics[stopping.metric]
        if self.best["score"] is None or score > self.best["score"] + stopping.min_delta:
            self.best = {"score": score, "step": self.step, "metrics": metrics, "bad_evals": 0}
            if self.recipe.training.load_best:
                self.best_state = checkpoint.trainable_state(self.peft_model)
        else:
            self.best["bad_evals"] += 1
            if stopping.patience is not None and self.best["bad_evals"] >= stopping.patience:
                self.stopped_early = True
                self._bar.write(f"early stopping at step {self.step}: validation {stopping.metric} has not improved "
                                f"for {stopping.patience} evaluation(s) (best at step {self.best['step']})",
                                file=sys.stderr)  # stdout stays clean for --json

    def _evaluate(self, split: Any, *, accuracy: bool = True, progress: str | None = None,
                  leave: bool = True, bare: bool = False) -> dict[str, Any]:
        """Every evaluation pass of the run: metrics of the current adapter on one split (``bare``: of the
        bare base on the named splits, ``None`` where the task has no such comparison)."""
        options = {"batch_size": self.recipe.training.eval_batch_size, "device": self.accelerator.device}
        if bare:
            return self.task.base_metrics(self.peft_model, split, **options)
        model = self.accelerator.unwrap_model(self.model)
        return self.task.evaluate(model, split, **options, accuracy=accuracy, progress=progress, leave=leave)

    def _save_checkpoint(self) -> Path:
        path = None
        if self.accelerator.is_main_process:
            state = {"step": self.step, "history": self.history, "best": self.best, "stopped_early": self.stopped_early,
                     "train_seconds": self.train_seconds, "train_tokens": self.train_tokens}
            path = checkpoint.save_checkpoint(self.run_dir / "checkpoints", self.step, peft_model=self.peft_model,
                                              optimizer=self.optimizer, scheduler=self.scheduler, state=state,
                                              best=self.best_state, keep=self.recipe.training.keep_checkpoints)
        self.accelerator.wait_for_everyone()
        return from_main(self.accelerator, path)  # every process reports the same folder

    # --- 3. finish ------------------------------------------------------------------------------------------
    def finish(self, *, registry: Any = None) -> TrainResult:
        """Export the best adapter, evaluate it, write metrics and plot, register.

        A Ctrl-C at any point before the registry write (the first one is only noted
        while evaluating, a second one stops at once) registers nothing.
        """
        self.accelerator.wait_for_everyone()
        if not self.accelerator.is_main_process:
            return TrainResult(record=None, run_dir=self.run_dir, metrics={})
        try:
            if self.recipe.training.load_best and self.best_state is not None:
                checkpoint.load_trainable_state(self.peft_model, self.best_state)
            adapter_dir = checkpoint.save_adapter_dir(self.peft_model, self.run_dir / "adapter")
            metrics = self.final_metrics()
            runs.write_metrics(self.run_dir, {"name": self.recipe.name, "run_dir": str(self.run_dir),
                                              "metrics": metrics, "history": self.history})
            runs.plot_losses(self.run_dir, self.history, title=f"{self.recipe.name} ({self.recipe.adapter.method})")
            self.task.write_plots(self.run_dir, metrics)
            describe_adapter_dir(adapter_dir, self.recipe, metrics=metrics, base=self.base)  # loads with its task
        except KeyboardInterrupt:
            self.ctrl_c.requested = True
        if self.ctrl_c.requested:
            saved = self.run_dir / "adapter"
            keep = (f"The trained adapter is in {saved}: register it with `adapterhub registry import {saved} --name "
                    f"{self.recipe.name}`" if (saved / "adapter_model.safetensors").is_file() else
                    f"Continue with --resume --run-dir {self.run_dir}")
            raise TrainingError(f"interrupted after training, before registering; nothing was registered. {keep}")
        record = None
        if self.recipe.output.register_on_success:
            self._check_baseline(metrics, adapter_dir)
            record = register_adapter(adapter_dir, self.recipe, metrics=metrics, base=self.base, registry=registry)
        if self.recipe.output.prune_checkpoints:
            runs.prune_checkpoints(self.run_dir)
        if record is None:
            return TrainResult(record=None, run_dir=self.run_dir, metrics=metrics)
        if self.recipe.output.push_to_hub:
            push_adapter(record, self.recipe.output.push_to_hub, registry=registry, recipe=self.recipe)
        return TrainResult(record=record, run_dir=self.run_dir, metrics=metrics)

    def _check_baseline(self, metrics: dict[str, Any], adapter_dir: Path) -> None:
        """A classifier no better than chance or the bare base is not registered (:mod:`.baseline`)."""
        try:
            note = check_before_registering(self.recipe, metrics, adapter_dir)
        except BelowBaselineError:
            if self.recipe.output.prune_checkpoints:
                runs.prune_checkpoints(self.run_dir)
            raise
        if note and self.progress:
            print(note, file=sys.stderr)

    def final_metrics(self) -> dict[str, Any]:
        """Validation and test metrics of the current adapter (plus base zero-shot with ``eval_base``)."""
        splits = {name: split for name in ("validation", "test") if (split := getattr(self.data, name)) is not None}
        metrics: dict[str, Any] = {}
        for name, split in splits.items():
            metrics[name] = self._scored_already(name) or self._evaluate(
                split, progress=self._progress_label(f"evaluate {name}"))
            metrics[name] = {**metrics[name], **self._answer_metrics(name, split)}
        base = self._evaluate(splits, bare=True)
        if base is not None:
            metrics["base"] = base
        metrics["train"] = {
            "steps": self.step, "epochs": round(self.step / self.steps_per_epoch, 3), "stopped_early": self.stopped_early,
            "best_step": self.best["step"], "final_loss": self.history["train"][-1]["loss"] if self.history["train"] else None,
            "tokens": self.train_tokens, "seconds": round(self.train_seconds, 2), "processes": self.accelerator.num_processes,
            "tokens_per_second": round(self.train_tokens / max(self.train_seconds, 1e-9), 1),  # all processes
            "curve": runs.loss_curve(self.history)}  # the console draws it from the manifest
        return metrics

    def _answer_metrics(self, name: str, split: Any) -> dict[str, Any]:
        """JSON validity, exact match and per-field accuracy of schema-constrained answers (a recipe whose
        ``serve.schema`` constrains object answers), else nothing."""
        from .json_eval import answer_metrics, scores_answers

        schema = self.recipe.serve.response_schema
        if not scores_answers(self.recipe.data.format, split.rows, schema):
            return {}
        return answer_metrics(self.peft_model, self.base.tokenizer, self.recipe.task, split.rows, schema=schema,
                              batch_size=self.recipe.training.eval_batch_size, device=self.accelerator.device,
                              progress=self._progress_label(f"answer {name} under serve.schema"))

    def _scored_already(self, split: str) -> dict[str, Any] | None:
        """The best validation evaluation's metrics when they describe the adapter being exported
        (the best weights were restored, or the best was the last step) and are complete (label
        metrics too, for classification): evaluating the same weights again gives the same numbers."""
        best = self.best["metrics"]
        if split != "validation" or best is None or not (self.recipe.training.load_best or self.best["step"] == self.step):
            return None
        complete = not self.data.task.is_classification or "accuracy" in best
        return best if complete and self.task.reuses_validation else None

    def _progress_label(self, label: str) -> str | None:
        """``label`` for an evaluation's progress bar (on stderr), or ``None`` where no bar is shown."""
        return f"{label} ({self.recipe.name})" if self.progress and self.accelerator.is_main_process else None

    # --- 4. cleanup -----------------------------------------------------------------------------------------
    def cleanup(self) -> None:
        self.ctrl_c.restore()
        if self._bar is not None:
            self._bar.close()
