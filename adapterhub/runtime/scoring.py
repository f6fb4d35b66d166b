"""Label scoring for ``predict``: every prompt runs once and its cache serves all the labels.

A classification adapter's answer is the label with the highest summed
log-likelihood after the rendered prompt (the score
:func:`adapterhub.prompts.score_labels` defines). Scoring ``prompt + label`` as
one row per label would run each prompt once per label and project every
position onto the vocabulary. Here a chunk of prompts runs once (left-padded,
behind any prefix adapter's cache), the vocabulary head only at each prompt's
last position; that position scores every label's first token. The cache is then
repeated once per label in place and the labels' remaining tokens continue from
it, all labels of all texts in one forward::

    pass 1: [texts, prompt]           -> log p(first label token)        (head at 1 position)
    pass 2: [texts * labels, label-1] -> log p(each later label token)   (cache repeated per label)

Rows keep their adapters through both passes: the LoRA routing expands
``texts -> texts * labels`` the way beams do (:meth:`RowSlots.for_batch`).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from ..errors import TaskMismatchError
from ..prompts import TaskSpec, answer_ids, prompt_ids, render_prompt
from .batch import routed
from .generation import left_pad, prefixed_inputs
from .slots import ResidentAdapter

Routing = Callable[[Sequence[int]], tuple[Any, Any]]
"""``routing(text_indices) -> (RowSlots or None, PrefixBatch or None)`` for those texts' rows."""


def label_scores(model: Any, tokenizer: Any, task: TaskSpec, texts: Sequence[str], routing: Routing, *,
                 batch_size: int = 32, device: Any = "cpu") -> Any:
    """Summed log-likelihood of each label after each text's prompt.

    Args:
        model: the base causal LM (its adapter layers follow the routing).
        tokenizer: the base tokenizer.
        task: a classification task (labels, template, system prompt).
        texts: the inputs.
        routing: gives the routing of a chunk of texts (see :data:`Routing`).
        batch_size: label rows (texts × labels) per forward pass.
        device: where the model runs.

    Returns:
        A float32 tensor ``[len(texts), len(task.labels)]`` on CPU.
    """
    import torch

    labels = [answer_ids(tokenizer, label) for label in task.labels]
    prompts = [prompt_ids(tokenizer, render_prompt(tokenizer, task, text)) for text in texts]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    per_pass = max(1, batch_size // len(labels))
    scores = torch.empty(len(texts), len(labels), dtype=torch.float32)
    with torch.inference_mode():
        for start in range(0, len(texts), per_pass):
            chunk = list(range(start, min(start + per_pass, len(texts))))
            scores[start:start + len(chunk)] = _score_chunk(model, [prompts[i] for i in chunk], labels,
                                                            routing(chunk), pad_id=pad_id, device=device)
    return scores


def classification_task(entry: ResidentAdapter | None, name: str | None) -> TaskSpec:
    """The task of a row's adapter, which must be a classification adapter (``predict`` needs labels)."""
    if entry is None:
        raise TaskMismatchError("predict needs a classification adapter for every text, but some texts use the bare "
                                "base (domain None); pass domain= or domains= naming classification adapters")
    if not entry.task.is_classification:
        raise TaskMismatchError(f"predict needs a classification adapter, but {name!r} is a {entry.task.type} "
                                "adapter (no labels in its manifest); use hub.generate for it")
    return entry.task


def _score_chunk(model: Any, prompts: list[list[int]], labels: list[list[int]], routing: tuple[Any, Any], *,
                 pad_id: int, device: Any) -> Any:
    import torch
    from transformers import DynamicCache

    lora_rows, prefix = routing
    input_ids, attention_mask = left_pad(prompts, pad_id=pad_id, device=device)
    mask, positions, cache = prefixed_inputs(attention_mask, prefix)
    if cache is None:
        cache = DynamicCache(config=model.config)
    with routed(lora_rows):
        last = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, cache=cache,
                     use_cache=True, logits_to_keep=1).logits[:, -1]
        scores = torch.log_softmax(last.float(), dim=-1)[:, [ids[0] for ids in labels]]  # [texts, labels]
        width = max(len(ids) for ids in labels) - 1
        if width == 0:
            return scores.cpu()
        count = len(labels)
        fed = torch.full((count, width), pad_id, dtype=torch.long)  # tokens fed: label[:-1]
        targets = torch.zeros((count, width), dtype=torch.long)  # tokens scored: label[1:]
        label_mask = torch.zeros((count, width), dtype=torch.long)
        for row, ids in enumerate(labels):
            fed[row, :len(ids) - 1] = torch.tensor(ids[:-1])
            targets[row, :len(ids) - 1] = torch.tensor(ids[1:])
            label_mask[row, :len(ids) - 1] = 1
        texts = len(prompts)
        fed, targets, label_mask = (t.repeat(texts, 1).to(device) for t in (fed, targets, label_mask))
        cache.batch_repeat_interleave(count)  # row t * count + j: text t, label j
        starts = (positions[:, -1] + 1).repeat_interleave(count)
        logits = model(input_ids=fed, attention_mask=torch.cat([mask.repeat_interleave(count, 0), label_mask], 1),
                       position_ids=starts[:, None] + torch.arange(width, device=device), cache=cache,
                       use_cache=True).logits
    later = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets[..., None]).squeeze(-1)
    return (scores + (later * label_mask).sum(-1).view(texts, count)).cpu()
