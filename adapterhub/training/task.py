"""What a training run does differently per base kind, behind one interface: the trainer
(:mod:`adapterhub.training.trainer`) is one loop, and asks its :class:`TrainingTask` for the model,
the batches, the evaluation and the plots.

* decoders (causal LMs; every decoder format): :class:`~adapterhub.training.decoder_task.DecoderTask`;
* encoders (``sequence_classification``, ``token_classification``):
  :class:`~adapterhub.training.encoder_task.EncoderTask`.

>>> task = training_task(recipe, base, label=lambda text: None)  # doctest: +SKIP
>>> peft_model = task.build_model()  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from ..errors import RecipeError

Label = Callable[[str], "str | None"]
"""A progress bar's label for a pass (``None``: show no bar)."""


class TrainingTask(Protocol):
    """The per-kind half of a training run."""

    trunk: Any  # the frozen trunk (decoders with adapter.last_layers), else None
    reuses_validation: bool  # the best validation metrics are complete final metrics of the same weights

    def build_model(self) -> Any:
        """The trainable PEFT model over the base, in train mode."""

    def loss_model(self, peft_model: Any) -> Any:
        """The module whose forward returns the summed loss of a batch (what the accelerator prepares)."""

    def before_training(self, examples: Sequence[Any]) -> float:
        """Work done once before the first step; returns its seconds (counted as training time)."""

    def batch(self, examples: Sequence[Any], indices: Sequence[int]) -> Any:
        """One micro-batch of ``examples[indices]`` (``.targets``, ``.num_tokens``, ``.to(device)``)."""

    def batch_inputs(self, batch: Any) -> dict[str, Any]:
        """The loss model's keyword arguments for ``batch``."""

    def evaluate(self, model: Any, split: Any, *, batch_size: int, device: Any, accuracy: bool = True,
                 progress: str | None = None, leave: bool = True) -> dict[str, Any]:
        """Metrics of the loss model ``model`` on one split."""

    def base_metrics(self, peft_model: Any, splits: dict[str, Any], *, batch_size: int,
                     device: Any) -> dict[str, Any] | None:
        """The bare base's metrics on ``splits`` when the recipe asks for them (``None``: not asked or n/a)."""

    def write_plots(self, run_dir: Path, metrics: dict[str, Any]) -> None:
        """Plots of the final metrics beside the loss curve."""


def training_task(recipe: Any, base: Any, *, label: Label) -> TrainingTask:
    """The task for ``recipe`` on ``base`` (``label``: progress bar labels of its own passes).

    Raises:
        RecipeError: the data format needs the other kind of base.
    """
    encoder = recipe.task.is_encoder_task
    if recipe.task.base_kind != base.kind:
        raise RecipeError(f"data.format {recipe.data.format!r} needs a{'n' if encoder else ''} "
                          f"{recipe.task.base_kind} base, but base.model {recipe.base.model!r} is a"
                          f"{'n' if base.kind == 'encoder' else ''} {base.kind}; set base.model to "
                          f"{'minilm-l6' if encoder else 'smollm2-135m-instruct'} (or another "
                          f"{recipe.task.base_kind})")
    if encoder:
        from .encoder_task import EncoderTask

        return EncoderTask(recipe, base)
    from .decoder_task import DecoderTask

    return DecoderTask(recipe, base, label=label)
