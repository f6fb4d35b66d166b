"""Label scoring: every prompt runs once and its cache serves all of its labels.

A classification adapter's answer is the label with the highest summed
log-likelihood after the rendered prompt (the score
:func:`adapterhub.prompts.score_labels` defines). Scoring ``prompt + label`` as
one row per label would run each prompt once per label and project every
position onto the vocabulary. Here a chunk of prompts — rows of any adapters and
tasks, each rendered with its own template — runs once (left-padded, behind any
prefix cache), the vocabulary head only at each prompt's last position; that
position scores the first token of every label. The labels' remaining tokens
continue from each row's cache, all labels of all rows in one forward: a row's
labels sit side by side in one forward row, each attending to the prompt and its
own earlier tokens (a ``[rows, 1, queries, keys]`` mask), so nothing is copied per
label and no label is padded to the longest (under an attention that takes no such
mask, one forward row per label over a copy of its row's cache). When every row of the chunk goes
through one adapter, the tokens all its prompts start with (a template's
instruction and label list) run once, and every row attends to their cache::

    pass 0: [1, shared start]               -> cache viewed by every row  (once per adapter and start)
    pass 1: [rows, rest of prompt]          -> log p(first label token)   (head at 1 position)
    pass 2: [rows, labels' tokens but last] -> log p(each later token)    (a row's labels side by side)

The runtime's ``predict`` and training's evaluation both score this way; each
says how rows reach their adapters through a :class:`Routing`.

>>> label_scores(model, tokenizer, [task], ["Shares jumped 8%."], lambda rows: Routing())  # doctest: +SKIP
[[-0.21, -6.4, -9.1]]
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

from .prompts import TaskSpec, answer_ids, prompt_ids, render_prompt
from .tokens import PrefixBatch, common_prefix, left_pad, pad_id_of, prefixed_inputs


@dataclass
class Routing:
    """How the rows of one forward pass reach their adapters.

    This base routes nothing per row: whatever adapter the model carries applies
    to every row, and ``prefix`` (if any) precedes every row. The runtime's
    subclass routes adapter layers row by row.
    """

    prefix: PrefixBatch | None = None
    adapter: Hashable | None = "model"  # the one adapter every row goes through (None: rows differ): such rows
    # run their common prompt start once per call, for every chunk whose routing names the same adapter

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
        routing_for: gives the routing of a chunk of rows (see :data:`RoutingFor`). Rows of one task are
            chunked together (in a mixed call, each adapter's rows then share their prompt start).
        batch_size: label rows (rows × their labels) per chunk, the rows scored by one set of forward
            passes (a row with more labels than this still runs, alone).
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
    first_seen = {task: rank for rank, task in enumerate(label_ids)}
    order = sorted(range(len(tasks)), key=lambda row: first_seen[tasks[row]])  # a task's rows side by side
    scores: list[list[float]] = [[] for _ in tasks]
    starts: dict[Hashable, list[tuple[Any, Any]]] = {}  # a shared prompt start's cache, computed once per call
    with torch.inference_mode():
        for chunk in chunks([len(tasks[row].labels) for row in order], batch_size):
            rows = [order[i] for i in chunk]
            found = _score_chunk(model, [prompts[row] for row in rows], [label_ids[tasks[row]] for row in rows],
                                 routing_for(rows), pad_id=pad_id, device=device, trunk=trunk, starts=starts)
            for row, row_scores in zip(rows, found):
                scores[row] = row_scores
            if on_rows is not None:
                on_rows(len(rows))
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


@dataclass
class _Pass:
    """One forward pass of a chunk: its tokens and where they sit (see :func:`_chunk_passes`)."""

    name: str  # "shared" (the prompt start every row has, batch 1), "prompts" or "labels"
    tokens: Any  # [rows, T] token ids
    attention_mask: Any  # [rows, cached + T]
    position_ids: Any  # [rows, T]
    rows: list[int] | None  # the routing row of each forward row (None: the chunk's rows, in order)
    logits_to_keep: int  # 0: every position


def _score_chunk(model: Any, prompts: list[list[int]], labels: list[list[list[int]]], routing: Routing, *,
                 pad_id: int, device: Any, trunk: Any = None,
                 starts: dict[Hashable, Any] | None = None) -> list[list[float]]:
    """Scores of ``labels[i]`` (token ids per label) after ``prompts[i]``, for one chunk of rows
    (``starts``: the caches of shared prompt starts already run in this call, by adapter and tokens)."""
    import torch
    from transformers import DynamicCache

    from ._transformers import last_positions

    passes, source, targets, owner = _chunk_passes(prompts, labels, routing, pad_id=pad_id, device=device,
                                                   side_by_side=_side_by_side_mask(model))
    cache = routing.prefix.cache if routing.prefix is not None else (
        DynamicCache(config=model.config) if trunk is None else DynamicCache())
    inputs, scope = [{"input_ids": p.tokens} for p in passes], nullcontext
    if trunk is not None:  # the frozen layers' outputs for these inputs, computed once; the layers above run now
        key = ("labels", tuple(map(tuple, prompts)), tuple(tuple(map(tuple, row)) for row in labels), len(passes))
        hidden = trunk.kept(key, lambda: _trunk_passes(trunk, passes, source, len(prompts)))
        inputs, scope = [{"inputs_embeds": states} for states in hidden], trunk.top

    def kept(step: _Pass) -> Any:  # the last positions as indices (see last_positions), or 0 for every one
        return step.logits_to_keep and last_positions(step.tokens.shape[1], step.logits_to_keep, device=device)

    def forward(index: int, step: _Pass, cache: Any) -> Any:
        with routing.applied(step.rows), scope():
            return model(**inputs[index], attention_mask=step.attention_mask, position_ids=step.position_ids,
                         cache=cache, use_cache=True, logits_to_keep=kept(step)).logits

    shared_start = None if passes[0].name != "shared" or starts is None else starts.setdefault(
        (routing.adapter, tuple(prompts[0][:passes[0].tokens.shape[1]])), [])
    logits = dict(zip((step.name for step in passes),
                      _run_passes(passes, cache, source, len(prompts), forward, start=shared_start)))
    first = torch.log_softmax(logits["prompts"][:, -1].float(), dim=-1)
    scores = first[source, torch.tensor([ids[0] for row in labels for ids in row], device=device)]  # [label rows]
    if targets is not None:  # each later token's log-probability, added to its label's score
        later = torch.log_softmax(logits["labels"].float(), dim=-1).gather(-1, targets[..., None]).squeeze(-1)
        scored = owner >= 0
        scores = scores.index_add(0, owner[scored], later[scored])
    flat = scores.cpu().tolist()
    result, start = [], 0
    for row_labels in labels:
        result.append(flat[start:start + len(row_labels)])
        start += len(row_labels)
    return result


def _chunk_passes(prompts: list[list[int]], labels: list[list[list[int]]], routing: Routing, *, pad_id: int,
                  device: Any, side_by_side: Any = None) -> tuple[list[_Pass], Any, Any, Any]:
    """The forward passes scoring one chunk, the prompt row of each label (``source``), and the tokens the
    labels pass scores (``targets``) with the label each belongs to (``owner``; see :func:`_label_tokens`).

    When every row goes through the same adapter and the prompts start alike (a template's
    instruction), that start runs once as a batch of one (``"shared"``) and every row attends to
    its keys/values; the prompts' remaining tokens follow, left-padded, then the labels: with
    ``side_by_side`` (a mask kind, see :func:`_side_by_side_mask`) all labels of a row in one
    forward row over its own cache, else one forward row per label over a copy of its row's cache.
    """
    import torch

    rows = len(prompts)
    shared = min(common_prefix(prompts), min(map(len, prompts)) - 1) if routing.adapter is not None and rows > 1 else 0
    input_ids, attention_mask = left_pad([prompt[shared:] for prompt in prompts], pad_id=pad_id, device=device)
    prefix = routing.prefix
    passes = []
    if shared > 0:  # the start goes behind the rows' prefix (none: an empty one) and becomes part of it
        before_mask = attention_mask.new_zeros(rows, 0) if prefix is None else prefix.mask
        before = attention_mask.new_zeros(rows) if prefix is None else prefix.lengths
        ones = torch.ones(rows, shared, dtype=torch.long, device=device)
        passes.append(_Pass("shared", input_ids.new_tensor([prompts[0][:shared]]),
                            torch.cat([before_mask[:1], ones[:1]], 1),
                            before[:1, None] + torch.arange(shared, device=device)[None], [0], 1))
        prefix = PrefixBatch(cache=None, mask=torch.cat([before_mask, ones], 1), lengths=before + shared)
    mask, positions, _ = prefixed_inputs(attention_mask, prefix)
    passes.append(_Pass("prompts", input_ids, mask, positions, None, 1))
    pairs = [(row, ids) for row, row_labels in enumerate(labels) for ids in row_labels]  # one per label row
    source = torch.tensor([row for row, _ in pairs], device=device)
    if max(len(ids) for _, ids in pairs) <= 1:
        return passes, source, None, None
    if side_by_side is None:  # one forward row per label row, continuing a copy of its prompt's cache
        fed, targets, owner, offsets = _label_tokens([[ids] for _, ids in pairs], pad_id=pad_id, device=device)
        passes.append(_Pass("labels", fed, torch.cat([mask[source], (owner >= 0).long()], dim=1),
                            positions[source, -1:] + 1 + offsets, source.tolist(), 0))
    else:  # one forward row per prompt: its labels side by side, each seeing the prompt and its own tokens
        fed, targets, owner, offsets = _label_tokens(labels, pad_id=pad_id, device=device)
        passes.append(_Pass("labels", fed, _labels_beside(mask, owner, side_by_side),
                            positions[:, -1:] + 1 + offsets, None, 0))
    return passes, source, targets, owner


def _label_tokens(rows: list[list[list[int]]], *, pad_id: int, device: Any) -> tuple[Any, Any, Any, Any]:
    """``(fed, targets, owner, offsets)``, each ``[len(rows), W]``, for forward rows that each carry the
    labels listed for them (token ids per label) one after another, right-padded.

    A label's tokens but its last are fed, its tokens but its first are scored; ``owner`` numbers each
    position's label (counting labels across all rows in order; -1: padding), ``offsets`` its place within it.

    >>> [t.tolist() for t in _label_tokens([[[5, 6, 7], [8, 9]], [[4]]], pad_id=0, device="cpu")]
    [[[5, 6, 8], [0, 0, 0]], [[6, 7, 9], [0, 0, 0]], [[0, 0, 1], [-1, -1, -1]], [[0, 1, 0], [0, 0, 0]]]
    """
    import torch

    width = max(sum(len(ids) - 1 for ids in row) for row in rows)
    fed = torch.full((len(rows), width), pad_id, dtype=torch.long)
    targets = torch.zeros((len(rows), width), dtype=torch.long)
    owner = torch.full((len(rows), width), -1, dtype=torch.long)
    offsets = torch.zeros((len(rows), width), dtype=torch.long)
    label = 0
    for index, row in enumerate(rows):
        start = 0
        for ids in row:
            stop = start + len(ids) - 1
            fed[index, start:stop], targets[index, start:stop] = torch.tensor(ids[:-1]), torch.tensor(ids[1:])
            owner[index, start:stop], offsets[index, start:stop] = label, torch.arange(stop - start)
            start, label = stop, label + 1
    return fed.to(device), targets.to(device), owner.to(device), offsets.to(device)


def _labels_beside(prompt_mask: Any, owner: Any, kind: Any) -> Any:
    """The ``[rows, 1, W, cached + W]`` attention mask of labels side by side: every position sees its row's
    prompt (``prompt_mask`` ``[rows, cached]``) and the earlier tokens of its own label; ``kind``: ``torch.bool``
    (True: attend) or a float dtype (0 / its lowest value, added to the scores)."""
    import torch

    width = owner.shape[1]
    earlier = torch.ones(width, width, dtype=torch.bool, device=owner.device).tril()
    own = (owner[:, :, None] == owner[:, None, :]) & (owner[:, None, :] >= 0) & earlier
    allowed = torch.cat([prompt_mask.bool()[:, None, :].expand(-1, width, -1), own], dim=2)[:, None]
    if kind is torch.bool:
        return allowed
    return torch.zeros(allowed.shape, dtype=kind, device=owner.device).masked_fill_(~allowed, torch.finfo(kind).min)


def _side_by_side_mask(model: Any) -> Any:
    """The mask kind that lets labels sit side by side in one row under this model's attention (``torch.bool``
    for SDPA, ``float32`` added to eager attention's scores), or ``None``: one row per label (others take no
    custom ``[rows, 1, queries, keys]`` mask)."""
    import torch

    implementation = getattr(getattr(model, "config", None), "_attn_implementation", None)
    return {"sdpa": torch.bool, "eager": torch.float32}.get(implementation)


def _run_passes(passes: list[_Pass], cache: Any, source: Any, rows: int,
                forward: Callable[[int, _Pass, Any], Any], *, start: list[tuple[Any, Any]] | None = None) -> list[Any]:
    """``forward(index, pass, cache)`` of each pass in order, the cache carried between them: after the
    shared prompt start every row views its one computed cache; labels side by side continue their rows'
    caches, one row per label (a pass with ``rows``) continues a copy of row ``source[k]``'s.

    ``start``: the cache ``(keys, values)`` per layer after this shared start, from an earlier chunk
    (then the shared pass is skipped, its output ``None``), or an empty list to fill.
    """
    import torch

    from ._transformers import broadcast_cache, cache_layers

    outputs = []
    for index, step in enumerate(passes):
        if step.name == "shared":
            if start:  # run by an earlier chunk: its cache, as it left the shared pass
                _fill_cache(cache, start)
                broadcast_cache(cache, rows)
                outputs.append(None)
                continue
            if cache_layers(cache):  # a prefix in front: the rows' prefixes agree, the start needs one
                cache.batch_select_indices(torch.zeros(1, dtype=torch.long, device=source.device))
        if step.name == "labels" and step.rows is not None:  # one row per label: a copy of its prompt's cache
            cache.batch_select_indices(source)
        outputs.append(forward(index, step, cache))
        if step.name == "shared":
            if start is not None:
                start.extend((layer.keys, layer.values) for layer in cache_layers(cache))
            broadcast_cache(cache, rows)
    return outputs


def _fill_cache(cache: Any, layers: list[tuple[Any, Any]]) -> None:
    """Make ``cache`` hold exactly ``layers`` (``(keys, values)`` per layer), whatever it held before."""
    from ._transformers import cache_layers

    filled = {id(layer): layer for layer in cache_layers(cache)}
    for index, (keys, values) in enumerate(layers):
        layer = cache.layers[index] if index < len(cache.layers) else None
        if layer is not None and id(layer) in filled:
            layer.keys, layer.values = keys, values
        else:
            cache.update(keys, values, index)


def _trunk_passes(trunk: Any, passes: list[_Pass], source: Any, rows: int) -> list[Any]:
    """The frozen trunk's outputs for each of the chunk's passes."""
    from transformers import DynamicCache

    def forward(index: int, step: _Pass, cache: Any) -> Any:
        return trunk.body(input_ids=step.tokens, attention_mask=step.attention_mask, position_ids=step.position_ids,
                          cache=cache, use_cache=True).last_hidden_state

    with trunk.trunk():
        return _run_passes(passes, DynamicCache(), source, rows, forward)


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
