"""The decoder half of a training run (causal LMs, every decoder data format): the PEFT model over the
(possibly quantised) base, the frozen trunk below ``adapter.last_layers``, completion-only loss on
length-grouped or packed batches, and evaluation by loss and label scoring.

>>> task = DecoderTask(recipe, base, label=lambda text: None)  # doctest: +SKIP
>>> loss_model = task.loss_model(task.build_model())  # doctest: +SKIP
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from .. import methods
from .._transformers import quiet_peft_wrapping
from .dropout import use_sparse_dropout


class DecoderTask:
    """See the module docstring; :class:`~adapterhub.training.task.TrainingTask` lists the methods
    (``label``: a progress bar's label for one of its passes, ``None`` for no bar)."""

    reuses_validation = True

    def __init__(self, recipe: Any, base: Any, *, label: Callable[[str], str | None]):
        self.recipe, self.base, self.label = recipe, base, label
        self.pad_id = base.tokenizer.pad_token_id
        self.trunk: Any = None

    def build_model(self) -> Any:
        from peft import prepare_model_for_kbit_training

        method = methods.get(self.recipe.adapter.method)
        checkpointing = self.recipe.training.gradient_checkpointing
        model = self.base.model
        with quiet_peft_wrapping():
            if self.base.spec.quantize is not None:
                model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing,
                                                        gradient_checkpointing_kwargs={"use_reentrant": False})
            elif checkpointing:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            peft_model = methods.build_trainable(method, model, self.recipe, self.base)
        use_sparse_dropout(peft_model)  # same masks' distribution, a random draw per dropped element only
        method.initialise(peft_model, self.base.tokenizer, self.recipe)
        peft_model.train()
        return peft_model

    def loss_model(self, peft_model: Any) -> Any:
        from .lm_loss import SupervisedLM
        from .trunk import FrozenTrunk

        self.trunk = None if self.recipe.data.packing else FrozenTrunk.of(
            peft_model, budget_mb=self.recipe.training.frozen_cache_mb)  # frozen first layers: run once per row, kept
        return SupervisedLM(peft_model, self.trunk)

    def before_training(self, examples: Sequence[Any]) -> float:
        """The frozen layers over every training row, once for every epoch (when they fit the budget)."""
        if self.trunk is None:
            return 0.0
        seconds = self.trunk.seconds
        progress = self.label(f"first {self.trunk.depth} layers, once")
        states = self.trunk.prepare(examples, pad_id=self.pad_id, progress=progress)
        if states is None and progress is not None:
            print(f"note: the frozen layers' outputs for {len(examples)} training rows do not fit "
                  f"training.frozen_cache_mb={self.recipe.training.frozen_cache_mb:g}: every step runs the whole "
                  f"model (raise it to keep them)", file=sys.stderr)
        return self.trunk.seconds - seconds

    def batch(self, examples: Sequence[Any], indices: Sequence[int]) -> Any:
        from .batching import collate
        from .trunk import attach_states

        data, training = self.recipe.data, self.recipe.training
        share = training.share_prompt_prefix and not (training.gradient_checkpointing or data.packing)
        batch = collate([examples[i] for i in indices], pad_id=self.pad_id, share_prefix=share,
                        pack_length=data.max_length if data.packing else None)
        return attach_states(batch, self.trunk, examples, indices, pad_id=self.pad_id)

    def batch_inputs(self, batch: Any) -> dict[str, Any]:
        from .lm_loss import batch_inputs

        return batch_inputs(batch)

    def evaluate(self, model: Any, split: Any, *, batch_size: int, device: Any, accuracy: bool = True,
                 progress: str | None = None, leave: bool = True) -> dict[str, Any]:
        from .evaluate import evaluate_split

        return evaluate_split(model, self.base.tokenizer, self.recipe.task, split, batch_size=batch_size,
                              device=device, accuracy=accuracy, progress=progress, leave=leave)

    def base_metrics(self, peft_model: Any, splits: dict[str, Any], *, batch_size: int,
                     device: Any) -> dict[str, Any] | None:
        """With ``training.eval_base`` on a classification task: the bare base zero-shot, same prompt."""
        from .evaluate import zero_shot_metrics

        task = self.recipe.task
        if not (self.recipe.training.eval_base and task.is_classification):
            return None
        return {name: zero_shot_metrics(peft_model, self.base.tokenizer, task, split, batch_size=batch_size,
                                        device=device, progress=self.label(f"bare base on {name}"), trunk=self.trunk)
                for name, split in splits.items()}

    def write_plots(self, run_dir: Path, metrics: dict[str, Any]) -> None:
        """Classifiers: the encoder's confusion-matrix PNGs (the loss curve every run writes is beside them)."""
        from .encoder_task import write_plots

        write_plots(run_dir, metrics, name=self.recipe.name)
