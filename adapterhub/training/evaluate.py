"""Evaluation: loss and perplexity on the supervised tokens; accuracy and per-label F1 by label scoring.

Classification is never judged by parsing generated text: every label is
scored by its log-likelihood after the prompt (the score :func:`adapterhub.prompts.score_labels`
defines, computed by the same code as the runtime's ``predict``) and the best label wins.

>>> label_metrics(["a", "b", "b"], ["a", "b", "a"], labels=("a", "b"))["accuracy"]
0.6667
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Sequence

from .._transformers import quiet_peft_wrapping
from ..errors import DataError
from ..prompts import TaskSpec, answer_ids
from ..tokens import pad_id_of
from .batching import collate, plan_batches
from .examples import Example, Split
from .progress import row_bar


def loss_metrics(model: Any, examples: Sequence[Example], *, pad_id: int, batch_size: int = 32,
                 device: Any = "cpu", on_rows: Callable[[int], Any] | None = None) -> dict[str, float]:
    """Mean token loss and perplexity over the supervised tokens of ``examples``.

    Args:
        model: a :class:`~adapterhub.training.lm_loss.SupervisedLM` (or anything with its forward).
        examples: encoded examples.
        pad_id: padding token id.
        batch_size: examples per forward pass.
        device: where the model lives.
        on_rows: called with the number of examples done after each batch.

    Returns:
        ``{"loss": float, "perplexity": float, "tokens": int}``.
    """
    import torch

    from .lm_loss import batch_inputs

    from .trunk import attach_states

    total, tokens = 0.0, 0
    trunk = getattr(model, "trunk", None)  # a SupervisedLM over a frozen trunk reuses its outputs
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for indices in plan_batches([len(e) for e in examples], batch_size=batch_size, seed=None):
                batch = attach_states(collate([examples[i] for i in indices], pad_id=pad_id, share_prefix=True),
                                      trunk, examples, indices, pad_id=pad_id).to(device)
                total += float(model(**batch_inputs(batch)))
                tokens += int(batch.targets.numel())
                if on_rows is not None:
                    on_rows(len(indices))
    finally:
        model.train(was_training)
    loss = total / max(tokens, 1)
    return {"loss": round(loss, 5), "perplexity": round(math.exp(min(loss, 50.0)), 4), "tokens": tokens}


def label_metrics(predictions: Sequence[str], references: Sequence[str], *, labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-label F1 and the rest of the classification report (per-label precision,
    recall and support, the confusion matrix), rounded to 4 places: the encoder's
    :func:`~adapterhub.training.encoder_metrics.classification_report`, so both kinds report alike.

    >>> label_metrics(["a", "a"], ["a", "b"], labels=("a", "b"))["f1"]
    {'a': 0.6667, 'b': 0.0}
    """
    from .encoder_metrics import classification_report

    return classification_report(predictions, references, labels=labels)


def classify(model: Any, tokenizer: Any, task: TaskSpec, texts: Sequence[str], *, batch_size: int = 32,
             device: Any = "cpu", on_rows: Callable[[int], Any] | None = None, trunk: Any = None) -> list[str]:
    """The best-scoring label for each text (see :func:`label_score_matrix`).

    ``model`` is a ``PeftModel`` or a plain causal LM (the bare base).
    """
    scores = label_score_matrix(model, tokenizer, task, texts, batch_size=batch_size, device=device, on_rows=on_rows,
                                trunk=trunk)
    return [task.labels[int(i)] for i in scores.argmax(dim=-1)]


def label_score_matrix(model: Any, tokenizer: Any, task: TaskSpec, texts: Sequence[str], *, batch_size: int = 32,
                       device: Any = "cpu", on_rows: Callable[[int], Any] | None = None, trunk: Any = None) -> Any:
    """Summed log-likelihood of every label after every text's prompt, ``[texts, labels]`` float32.

    The scores of :func:`adapterhub.prompts.score_labels` (one full forward per text and
    label), computed the way the runtime's ``predict`` computes them
    (:func:`adapterhub.scoring.label_scores`): each prompt runs once, batched, and
    its cache serves all the labels. A PEFT LoRA adapter is simply active in the model; a
    PEFT prefix enters as the cache in front of every prompt, as PEFT's own forward puts it.
    With ``trunk`` (the model's :class:`~adapterhub.training.trunk.FrozenTrunk`) the frozen
    layers run once per input across calls.

    >>> label_score_matrix(peft_model, tokenizer, task, ["Shares jumped 8%."]).shape  # doctest: +SKIP
    torch.Size([1, 3])
    """
    import torch

    from ..scoring import Routing, label_scores
    from ..tokens import PrefixBatch
    from .lm_loss import causal_lm

    config = getattr(model, "active_peft_config", None)

    def routing(rows: Sequence[int]) -> Routing:  # the PEFT adapter applies to every row
        if not getattr(config, "is_prompt_learning", False):
            return Routing()
        tokens = config.num_virtual_tokens
        return Routing(prefix=PrefixBatch(cache=model.get_prompt(len(rows)),
                                          mask=torch.ones(len(rows), tokens, dtype=torch.long, device=device),
                                          lengths=torch.full((len(rows),), tokens, dtype=torch.long, device=device)))

    was_training = model.training
    model.eval()
    try:
        scores = label_scores(causal_lm(model), tokenizer, [task] * len(texts), list(texts), routing,
                              batch_size=batch_size, device=device, on_rows=on_rows, trunk=trunk)
    finally:
        model.train(was_training)
    return torch.tensor(scores, dtype=torch.float32).view(len(texts), len(task.labels))


def evaluate_split(model: Any, tokenizer: Any, task: TaskSpec, split: Split, *, batch_size: int = 32,
                   device: Any = "cpu", accuracy: bool = True, progress: str | None = None,
                   leave: bool = True, errors: bool = False) -> dict[str, Any]:
    """Loss and perplexity, plus label metrics for classification tasks (unless ``accuracy=False``).

    With label metrics the split runs once: a classification example's supervised tokens are
    exactly its label's tokens and the end token after the full prompt (data encoding refuses
    to cut them), so the gold label's score is minus that example's summed token loss, and the
    loss comes from the same pass as the accuracy.

    Args:
        model: a :class:`~adapterhub.training.lm_loss.SupervisedLM` wrapping the PEFT model.
        tokenizer: the base tokenizer.
        task: the adapter's task.
        split: the encoded split (its rows give texts and reference labels).
        progress: the label of a progress bar on stderr (``None``: no bar); it counts rows.
        leave: keep the finished bar on screen.
        errors: classification: also list the misclassified rows with their label probabilities
            (``"errors"``, :func:`~adapterhub.training.misclassified.misclassified`).
    """
    if not (accuracy and task.is_classification):
        with row_bar(progress, len(split.examples), leave=leave) as bar:
            return loss_metrics(model, split.examples, pad_id=pad_id_of(tokenizer), batch_size=batch_size,
                                device=device, on_rows=bar.update)
    with row_bar(progress, len(split.rows), leave=leave) as bar:
        scores = label_score_matrix(model.model, tokenizer, task, [str(r["text"]) for r in split.rows],
                                    batch_size=batch_size, device=device, on_rows=bar.update,
                                    trunk=getattr(model, "trunk", None))
    gold = [task.labels.index(str(r["label"])) for r in split.rows]
    tokens = sum(len(answer_ids(tokenizer, task.labels[index])) for index in gold)
    loss = -float(sum(scores[row, index] for row, index in enumerate(gold))) / max(tokens, 1)
    predictions = [task.labels[int(i)] for i in scores.argmax(dim=-1)]
    metrics = {"loss": round(loss, 5), "perplexity": round(math.exp(min(loss, 50.0)), 4), "tokens": tokens,
               **label_metrics(predictions, [str(r["label"]) for r in split.rows], labels=task.labels)}
    if errors:
        from .misclassified import misclassified

        metrics["errors"] = misclassified(split.rows, scores, task.labels)
    return metrics


def zero_shot_metrics(peft_model: Any, tokenizer: Any, task: TaskSpec, split: Split, *, batch_size: int = 32,
                      device: Any = "cpu", progress: str | None = None, trunk: Any = None) -> dict[str, Any]:
    """Label metrics of the bare base (adapter disabled) with the same prompt (``progress``: a bar's label;
    ``trunk``: the adapter's frozen trunk, whose kept outputs are the bare base's too)."""
    with peft_model.disable_adapter(), row_bar(progress, len(split.rows)) as bar:  # a prefix lives only in the PeftModel
        return _split_label_metrics(peft_model.get_base_model(), tokenizer, task, split, batch_size=batch_size,
                                    device=device, on_rows=bar.update, trunk=trunk)


def _split_label_metrics(model: Any, tokenizer: Any, task: TaskSpec, split: Split, *, batch_size: int,
                         device: Any, on_rows: Callable[[int], Any] | None = None, trunk: Any = None) -> dict[str, Any]:
    """:func:`label_metrics` of ``model``'s predictions for the split's texts against its labels."""
    predictions = classify(model, tokenizer, task, [str(r["text"]) for r in split.rows], batch_size=batch_size,
                           device=device, on_rows=on_rows, trunk=trunk)
    return label_metrics(predictions, [str(r["label"]) for r in split.rows], labels=task.labels)


def evaluate_file(ref: str, data: str | Path, *, registry: Any = None, base: Any = None, adapter: bool = True,
                  batch_size: int = 32, progress: bool = False, quantize: str | None = None,
                  errors: bool = False) -> dict[str, Any]:
    """Score a registered adapter (or, with ``adapter=False``, the bare base with its prompt) on a data file.

    The file is read with the format and field mapping of the adapter's recipe
    (from its manifest). Classification adapters get accuracy and per-label F1;
    every adapter gets loss and perplexity; an instruction adapter whose contract has a response schema
    and whose rows answer with objects also gets JSON validity, exact match and per-field accuracy of its
    schema-constrained answers (:mod:`adapterhub.training.json_eval`).

    Args:
        ref: registry reference (``"finance"``, ``"finance@2"``).
        data: a ``.jsonl``/``.csv``/``.parquet`` file.
        registry: a :class:`~adapterhub.registry.Registry` (default: the default registry).
        base: a loaded base (default: load the base named in the manifest); the adapter is
            attached to it for the evaluation and removed again.
        adapter: ``False`` scores the bare base zero-shot with the adapter's prompt (decoder adapters; an
            encoder adapter's head exists only with the adapter).
        batch_size: rows per forward pass.
        progress: show a progress bar on stderr.
        quantize: load the manifest's base quantised (``"nf4"``, ``"fp4"``, ``"int8"``) when ``base`` is
            not given: how the adapter does when served on that base.
        errors: classifiers: also return ``"errors"``, the misclassified rows with their label probabilities.

    Returns:
        The metrics dict, plus ``"ref"``, ``"data"``, ``"adapter"`` and ``"quantize"`` (the base's).

    Raises:
        AdapterNotFoundError, DataError, IncompatibleBaseError: bad reference, file or base.

    >>> evaluate_file("finance", "recipes/data/finance/test.jsonl")["accuracy"]  # doctest: +SKIP
    0.9167
    """
    from ..base.loading import load_base
    from ..errors import ConfigError
    from ..registry.contract import contract_schema
    from .data import encode_split, map_fields, read_rows
    from .json_eval import answer_metrics, scores_answers

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r} must be a whole number >= 1 (--batch-size)")
    from .lm_loss import SupervisedLM
    from .recipe import Source
    from ..registry.store import Registry

    if not Path(data).expanduser().is_file():
        raise DataError(f"data file {Path(data).expanduser().resolve()} does not exist",
                        fix="pass an existing .jsonl/.csv/.parquet file as data=",
                        cli_fix="pass an existing .jsonl/.csv/.parquet file to --data")
    registry = registry if registry is not None else Registry()
    record = registry.get(ref)
    recipe = record.manifest.get("recipe") or {}
    recipe_data = recipe.get("data") or {}
    if base is None:
        base_name = (record.manifest.get("base") or {}).get("name") or (recipe.get("base") or {}).get("model")
        base = load_base(base_name, quantize=quantize) if base_name else load_base(quantize=quantize)
    if record.task.is_encoder_task:
        from .encoder_task import evaluate_registered

        return {"ref": record.ref, "data": str(data), "adapter": True, "quantize": base.spec.quantize,
                **evaluate_registered(registry, record, base, data, batch_size=batch_size, errors=errors)}
    peft_model = load_peft_model(registry, ref, base)
    task, fmt = record.task, recipe_data.get("format") or ("classification" if record.task.is_classification else "completion")
    origin = str(data)
    rows = map_fields(read_rows(Source(path=str(data))), fmt=fmt, fields=recipe_data.get("fields") or {}, origin=origin)
    examples = encode_split(rows, fmt=fmt, tokenizer=base.tokenizer, task=task,
                            max_length=int(recipe_data.get("max_length") or 4096), origin=origin)
    split = Split(origin, rows, examples)
    try:
        with nullcontext() if adapter else peft_model.disable_adapter():
            model = SupervisedLM(peft_model if adapter else peft_model.get_base_model())
            metrics = evaluate_split(model, base.tokenizer, task, split, batch_size=batch_size, device=base.model.device,
                                     progress=f"evaluate {record.ref}" if progress else None, errors=errors)
            schema = contract_schema(record.manifest)
            if scores_answers(fmt, rows, schema):  # answers in JSON: generated under the contract's schema
                metrics.update(answer_metrics(model.model, base.tokenizer, task, rows, schema=schema,
                                              batch_size=batch_size, device=base.model.device,
                                              progress=f"answer {record.ref} under its schema" if progress else None))
    finally:
        if not peft_model.active_peft_config.is_prompt_learning:
            peft_model.unload()  # give the caller's base back unchanged (a prefix never changed it)
    return {"ref": record.ref, "data": origin, "adapter": adapter, "quantize": base.spec.quantize, **metrics}


def load_peft_model(registry: Any, ref: str, base: Any) -> Any:
    """A ``PeftModel`` (or adapterhub's own wrapper) over ``base.model`` with a registered adapter's verified weights."""
    from ..methods import attach_weights

    loaded = registry.load(ref, base=base)
    with quiet_peft_wrapping():
        return attach_weights(base.model, loaded.config, loaded.tensors)
