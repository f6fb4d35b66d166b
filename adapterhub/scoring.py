"""Label scoring: every prompt runs once and its cache serves all of its labels.

A classification adapter's answer is the label with the highest summed
log-likelihood after the rendered prompt (the score
:func:`adapterhub.prompts.score_labels` defines). Scoring ``prompt + label`` as
one row per label would run each prompt once per label and project every
position onto the vocabulary. Here a chunk of prompts — rows of any adapters and
tasks, each rendered with its own template — runs once (left-padded, behind any
prefix cache), the vocabulary head only at each prompt's last position; that
position scores the first token of every label. Each row's cache is then
repeated once per label of its task and the labels' remaining tokens continue
from it, all labels of all rows in one forward::

    pass 1: [rows, prompt]                 -> log p(first label token)   (head at 1 position)
    pass 2: [sum of label counts, label-1] -> log p(each later token)    (cache rows repeated per label)

The runtime's ``predict`` and training's evaluation both score this way; each
says how rows reach their adapters through a :class:`Routing`.

>>> label_scores(model, tokenizer, [task], ["Shares jumped 8%."], lambda rows: Routing())  # doctest: +SKIP
[[-0.21, -6.4, -9.1]]
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .prompts import TaskSpec, answer_ids, prompt_ids, render_prompt
from .tokens import PrefixBatch, left_pad, pad_id_of, prefixed_inputs


@dataclass
class Routing:
    """How the rows of one forward pass reach their adapters.

    This base routes nothing per row: whatever adapter the model carries applies
    to every row, and ``prefix`` (if any) precedes every row. The runtime's
    subclass routes adapter layers row by row.
    """

    prefix: PrefixBatch | None = None

    def applied(self, rows: Sequence[int] | None = None) -> AbstractContextManager[None]:
        """A block in which the model's adapter layers follow these rows.

        ``rows`` maps each row of the forward pass to a row of this routing
        (``None``: the same rows, in order).
        """
        return nullcontext()


RoutingFor = Callable[[Sequence[int]], Routing]
"""``routing_for(row_indices)``: the :class:`Routing` of those rows of the call."""


def label_scores(model: Any, tokenizer: Any, tasks: Sequence[TaskSpec], texts: Sequence[str],
                 routing_for: RoutingFor, *, batch_size: int = 32, device: Any = "cpu",
                 on_rows: Callable[[int], Any] | None = None, trunk: Any = None) -> list[list[float]]:
    """Summed log-likelihood of each label of each row's task, after that row's prompt.

    Args:
        model: the causal LM (its adapter layers follow the routing).
        tokenizer: the base tokenizer.
        tasks: one classification task per row (labels, template, system prompt).
        texts: one input per row.
        routing_for: gives the routing of a chunk of rows (see :data:`RoutingFor`).
        batch_size: label rows (rows × their labels) per forward pass (a row with more labels
            than this still runs, alone).
        device: where the model runs.
        on_rows: called with the number of rows scored after each chunk (e.g. a progress bar's ``update``).
        trunk: a :class:`~adapterhub.training.trunk.FrozenTrunk` of ``model`` (training's evaluation): its
            frozen layers run once per chunk of inputs, later calls run the layers above only.

    Returns:
        Per row, the scores of its task's labels in label order.
    """
    import torch

    label_ids = {task: [answer_ids(tokenizer, label) for label in task.labels] for task in dict.fromkeys(tasks)}
    prompts = [prompt_ids(tokenizer, render_prompt(tokenizer, task, text)) for task, text in zip(tasks, texts)]
    pad_id = pad_id_of(tokenizer)
    scores: list[list[float]] = []
    with torch.inference_mode():
        for chunk in chunks([len(task.labels) for task in tasks], batch_size):
            scores.extend(_score_chunk(model, [prompts[i] for i in chunk], [label_ids[tasks[i]] for i in chunk],
                                       routing_for(chunk), pad_id=pad_id, device=device, trunk=trunk))
            if on_rows is not None:
                on_rows(len(chunk))
    return scores


def chunks(label_counts: Sequence[int], batch_size: int) -> list[list[int]]:
    """Consecutive row indices grouped so each group's label rows stay within ``batch_size``.

    >>> chunks([3, 3, 3], 6)
    [[0, 1], [2]]
    """
    groups: list[list[int]] = []
    total = 0
    for row, count in enumerate(label_counts):
        if not groups or total + count > batch_size:
            groups.append([])
            total = 0
        groups[-1].append(row)
        total += count
    return groups


def _score_chunk(model: Any, prompts: list[list[int]], labels: list[list[list[int]]], routing: Routing, *,
                 pad_id: int, device: Any, trunk: Any = None) -> list[list[float]]:
    """Scores of ``labels[i]`` (token ids per label) after ``prompts[i]``, for one chunk of rows."""
    import torch
    from transformers import DynamicCache

    input_ids, attention_mask = left_pad(prompts, pad_id=pad_id, device=device)
    mask, positions, cache = prefixed_inputs(attention_mask, routing.prefix)
    if cache is None:
        cache = DynamicCache(config=model.config) if trunk is None else DynamicCache()
    pairs = [(row, ids) for row, row_labels in enumerate(labels) for ids in row_labels]  # one per label row
    source = torch.tensor([row for row, _ in pairs], device=device)
    width = max(len(ids) for _, ids in pairs) - 1
    fed = targets = label_mask = None
    if width > 0:
        fed = torch.full((len(pairs), width), pad_id, dtype=torch.long)  # tokens fed: label[:-1]
        targets = torch.zeros((len(pairs), width), dtype=torch.long)  # tokens scored: label[1:]
        label_mask = torch.zeros((len(pairs), width), dtype=torch.long)
        for index, (_, ids) in enumerate(pairs):
            fed[index, :len(ids) - 1] = torch.tensor(ids[:-1])
            targets[index, :len(ids) - 1] = torch.tensor(ids[1:])
            label_mask[index, :len(ids) - 1] = 1
        fed, targets, label_mask = fed.to(device), targets.to(device), label_mask.to(device)
    first_pass = {"attention_mask": mask, "position_ids": positions}
    later_pass = {} if fed is None else {
        "attention_mask": torch.cat([mask[source], label_mask], dim=1),
        "position_ids": positions[source, -1:] + 1 + torch.arange(width, device=device)}
    first_in, later_in, scope = {"input_ids": input_ids}, {"input_ids": fed}, nullcontext
    if trunk is not None:  # the frozen layers' outputs for these inputs, computed once; the layers above run now
        key = ("labels", tuple(map(tuple, prompts)), tuple(tuple(map(tuple, row)) for row in labels))
        first_hidden, later_hidden = trunk.kept(key, lambda: _trunk_passes(
            trunk, {**first_pass, "input_ids": input_ids}, later_pass and {**later_pass, "input_ids": fed}, source))
        first_in, later_in, scope = {"inputs_embeds": first_hidden}, {"inputs_embeds": later_hidden}, trunk.top
    with routing.applied(), scope():
        last = model(**first_in, **first_pass, cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
    first = torch.log_softmax(last.float(), dim=-1)
    scores = first[source, torch.tensor([ids[0] for _, ids in pairs], device=device)]  # [label rows]
    if fed is not None:
        cache.batch_select_indices(source)  # label row k continues row source[k]'s cache
        with routing.applied([row for row, _ in pairs]), scope():
            logits = model(**later_in, **later_pass, cache=cache, use_cache=True).logits
        later = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets[..., None]).squeeze(-1)
        scores = scores + (later * label_mask).sum(-1)
    flat = scores.cpu().tolist()
    result, start = [], 0
    for row_labels in labels:
        result.append(flat[start:start + len(row_labels)])
        start += len(row_labels)
    return result


def _trunk_passes(trunk: Any, first: dict[str, Any], later: dict[str, Any], source: Any) -> tuple[Any, Any]:
    """The frozen trunk's outputs for both scoring passes (``later`` empty: labels of one token)."""
    from transformers import DynamicCache

    cache = DynamicCache()
    with trunk.trunk():
        first_hidden = trunk.body(**first, cache=cache, use_cache=True).last_hidden_state
        if not later:
            return first_hidden, None
        cache.batch_select_indices(source)
        return first_hidden, trunk.body(**later, cache=cache, use_cache=True).last_hidden_state


def label_probabilities(scores: dict[str, float]) -> dict[str, float]:
    """Each label's share of the probability mass the labels hold (a softmax over their log-likelihoods).

    >>> {k: round(v, 3) for k, v in label_probabilities({"yes": -0.1, "no": -2.4}).items()}
    {'yes': 0.909, 'no': 0.091}
    """
    import math

    top = max(scores.values())
    weights = {label: math.exp(score - top) for label, score in scores.items()}
    total = sum(weights.values())
    return {label: weight / total for label, weight in weights.items()}
