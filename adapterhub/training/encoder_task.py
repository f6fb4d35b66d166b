"""What the trainer does differently for encoder tasks: the model, the batches, the loss, the evaluation.

The trainer (:mod:`adapterhub.training.trainer`) stays one loop; for ``sequence_classification`` and
``token_classification`` recipes its :class:`EncoderTask` (see :mod:`adapterhub.training.task`) asks here for

* the PEFT model: LoRA on ``AutoModelFor{Sequence,Token}Classification`` over the base's weights, the
  new head trained in full and saved with the adapter (PEFT's ``modules_to_save``);
* batches (:func:`collate`) and the summed cross-entropy over supervised targets (:class:`ClassifierLoss`);
* evaluation (:func:`evaluate_split`) with the runtime's own decoding of entities, and the plots.

>>> loss_model = ClassifierLoss(peft_model)  # doctest: +SKIP
>>> loss_model(**batch_inputs(collate(examples, pad_id=0)))  # doctest: +SKIP
tensor(5.31)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..entities import IGNORE, entities_from_logits, words_of
from ..prompts import TaskSpec
from .examples import Example, Split
from .encoder_metrics import classification_report, entity_report, plot_confusion
from .entity_errors import plot_entity_errors


def peft_model(base: Any, recipe: Any, method: Any) -> Any:
    """A trainable PEFT model for an encoder recipe (LoRA, head in ``modules_to_save``)."""
    from peft import get_peft_model

    from ..base.encoder import load_task_model

    task: TaskSpec = recipe.task
    task_type = "TOKEN_CLS" if task.type == "token_classification" else "SEQ_CLS"
    model = load_task_model(base, task_type=task_type, labels=task.head_labels)
    if recipe.training.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return get_peft_model(model, method.peft_config(recipe, base))


@dataclass
class EncoderBatch:
    """Right-padded texts with their targets: one class per row, or one tag per supervised token."""

    input_ids: torch.Tensor  # [R, T]
    attention_mask: torch.Tensor  # [R, T]
    labels: torch.Tensor  # [R] (sequence) or [R, T] with IGNORE (token)
    num_examples: int
    num_tokens: int

    @property
    def targets(self) -> torch.Tensor:
        """The supervised labels (the trainer normalises the loss by their count)."""
        return self.labels[self.labels != IGNORE]

    def to(self, device: Any) -> EncoderBatch:
        return EncoderBatch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device),
                            self.num_examples, self.num_tokens)


def collate(examples: Sequence[Example], *, pad_id: int, token: bool) -> EncoderBatch:
    """Right-pad ``examples``; ``token`` says the labels are per token (else one class per example)."""
    width = max(len(e) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long) if token else \
        torch.tensor([e.labels[0] for e in examples], dtype=torch.long)
    for row, example in enumerate(examples):
        input_ids[row, :len(example)] = torch.tensor(example.input_ids)
        attention_mask[row, :len(example)] = 1
        if token:
            labels[row, :len(example)] = torch.tensor(example.labels)
    return EncoderBatch(input_ids, attention_mask, labels, len(examples), sum(len(e) for e in examples))


def batch_inputs(batch: EncoderBatch) -> dict[str, torch.Tensor]:
    """The keyword arguments of :meth:`ClassifierLoss.forward`."""
    return {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "labels": batch.labels}


class ClassifierLoss(torch.nn.Module):
    """Summed cross-entropy of a PEFT classification model over the supervised targets (float32)."""

    def __init__(self, model: Any):
        super().__init__()
        self.model = model

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=torch.zeros_like(input_ids)).logits

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = self.logits(input_ids, attention_mask)
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE,
                               reduction="sum")


ERROR_EXAMPLES = 15
"""Examples of each NER error kind kept in the metrics (the run folder's ``metrics.json``)."""


def evaluate_split(model: ClassifierLoss, tokenizer: Any, task: TaskSpec, split: Split, *, batch_size: int = 32,
                   device: Any = "cpu", accuracy: bool = True, errors: bool = False) -> dict[str, Any]:
    """Loss, plus the classification report (sequence) or the entity report (token) of ``split``
    (``errors``: sequence classification also lists the misclassified rows).

    Entities are decoded exactly as the runtime's ``tag`` decodes them (per word, first word piece, illegal
    BIO transitions repaired); NER metrics add overlap scores, error kinds with examples, and the exact-span
    scores of plain per-word argmax decoding (``argmax_decode``).
    """
    token = task.type == "token_classification"
    total, count, rows_logits = 0.0, 0, [None] * len(split.examples)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            order = sorted(range(len(split.examples)), key=lambda i: -len(split.examples[i]))
            for start in range(0, len(order), batch_size):
                indices = order[start:start + batch_size]
                batch = collate([split.examples[i] for i in indices], pad_id=_pad(tokenizer), token=token).to(device)
                logits = model.logits(batch.input_ids, batch.attention_mask)
                total += float(F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), batch.labels.reshape(-1),
                                               ignore_index=IGNORE, reduction="sum"))
                count += int(batch.targets.numel())
                for row, index in enumerate(indices):
                    rows_logits[index] = logits[row].float().cpu()
    finally:
        model.train(was_training)
    metrics: dict[str, Any] = {"loss": round(total / max(count, 1), 5)}
    if not accuracy:
        return metrics
    labels = task.head_labels
    if not token:
        predictions = [labels[int(logits.argmax())] for logits in rows_logits]
        metrics.update(classification_report(predictions, [str(r["label"]) for r in split.rows], labels=labels))
        if errors:
            from .misclassified import misclassified

            metrics["errors"] = misclassified(split.rows, torch.stack(rows_logits), labels)
        return metrics
    predicted, argmax = [], []
    for row, logits in zip(split.rows, rows_logits):
        words, firsts = words_of(tokenizer(row["text"], return_offsets_mapping=True))
        predicted.append(entities_from_logits(logits[firsts], row["text"], words, labels))
        argmax.append(entities_from_logits(logits[firsts], row["text"], words, labels, decode="argmax"))
    gold, texts = [r["entities"] for r in split.rows], [r["text"] for r in split.rows]
    metrics.update(entity_report(predicted, gold, types=task.labels, texts=texts, examples=ERROR_EXAMPLES))
    plain = entity_report(argmax, gold, types=task.labels)  # the same logits without the BIO repair, to compare
    metrics["argmax_decode"] = {key: plain[key] for key in ("precision", "recall", "f1")}
    return metrics


class EncoderTask:
    """The encoder half of a training run; :class:`~adapterhub.training.task.TrainingTask` lists the methods."""

    trunk = None  # every layer of an encoder runs each step
    reuses_validation = False  # validation tracks loss only; the final metrics score every split again

    def __init__(self, recipe: Any, base: Any):
        self.recipe, self.base = recipe, base
        self.pad_id = base.tokenizer.pad_token_id
        self.token = recipe.task.type == "token_classification"

    def build_model(self) -> Any:
        from .. import methods

        model = peft_model(self.base, self.recipe, methods.get(self.recipe.adapter.method))
        model.train()
        return model

    def loss_model(self, peft_model: Any) -> ClassifierLoss:
        return ClassifierLoss(peft_model)

    def before_training(self, examples: Sequence[Example]) -> float:
        return 0.0

    def batch(self, examples: Sequence[Example], indices: Sequence[int]) -> EncoderBatch:
        return collate([examples[i] for i in indices], pad_id=self.pad_id, token=self.token)

    def batch_inputs(self, batch: EncoderBatch) -> dict[str, torch.Tensor]:
        return batch_inputs(batch)

    def evaluate(self, model: ClassifierLoss, split: Split, *, batch_size: int, device: Any, accuracy: bool = True,
                 progress: str | None = None, leave: bool = True) -> dict[str, Any]:
        return evaluate_split(model, self.base.tokenizer, self.recipe.task, split, batch_size=batch_size,
                              device=device, accuracy=accuracy)

    def base_metrics(self, peft_model: Any, splits: dict[str, Split], *, batch_size: int,
                     device: Any) -> dict[str, Any] | None:
        return None  # a bare encoder has no head for the task: nothing to compare

    def write_plots(self, run_dir: Path, metrics: dict[str, Any]) -> None:
        write_plots(run_dir, metrics, name=self.recipe.name)


def write_plots(run_dir: Path, metrics: dict[str, Any], *, name: str) -> list[Path]:
    """``confusion_matrix[_<split>].png`` in the run folder for every split with a confusion matrix, and
    ``entity_errors[_<split>].png`` (exact/overlap F1 and error kinds per type) for every NER split."""
    written = []
    for split, values in metrics.items():
        suffix = "" if split == "validation" else f"_{split}"
        if isinstance(values, dict) and "confusion" in values:
            written.append(plot_confusion(run_dir / f"confusion_matrix{suffix}.png", values["confusion"],
                                          title=f"{name}: {split}"))
        if isinstance(values, dict) and "errors" in values:
            written.append(plot_entity_errors(run_dir / f"entity_errors{suffix}.png", values, title=f"{name}: {split}"))
    return written


def _pad(tokenizer: Any) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def evaluate_registered(registry: Any, record: Any, base: Any, data: Any, *, batch_size: int = 32,
                        errors: bool = False) -> dict[str, Any]:
    """Metrics of a registered encoder adapter on a data file (the format and fields of its recipe).

    The adapter's verified weights go into a fresh task model on ``base`` (as plain PEFT would load it).

    Raises:
        DataError: the file does not fit the adapter's task.
    """
    import peft

    from ..base.encoder import load_task_model
    from .data import encode_split, map_fields, read_rows
    from .recipe import Source

    task: TaskSpec = record.task
    recipe_data = (record.manifest.get("recipe") or {}).get("data") or {}
    loaded = registry.load(record.ref, base=base)
    model = load_task_model(base, task_type=loaded.config["task_type"], labels=task.head_labels)
    model = peft.get_peft_model(model, peft.PeftConfig.from_peft_type(**loaded.config))
    peft.set_peft_model_state_dict(model, loaded.tensors)
    origin = str(data)
    rows = map_fields(read_rows(Source(path=origin)), fmt=task.type, fields=recipe_data.get("fields") or {}, origin=origin)
    examples = encode_split(rows, fmt=task.type, tokenizer=base.tokenizer, task=task,
                            max_length=int(recipe_data.get("max_length") or 512), origin=origin)
    return evaluate_split(ClassifierLoss(model), base.tokenizer, task, Split(origin, rows, examples),
                          batch_size=batch_size, device=base.model.device, errors=errors)
