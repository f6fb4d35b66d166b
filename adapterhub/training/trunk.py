"""The frozen trunk: a model's first layers, computed once per input while an adapter trains above them.

With ``adapter.last_layers: N`` only the last ``N`` decoder layers carry LoRA
weights. The layers below have no trainable parameter and no dropout, so the
hidden states leaving them are a pure function of the tokens: the same in every
epoch and every validation. :class:`FrozenTrunk` computes them once — each
training row's (its prompt's shared prefix computed once per batch), and each
evaluated chunk's two label-scoring passes (prompt, then the labels from its
cache) — keeps them, and every later forward runs the adapted layers only from
the kept states (:func:`adapterhub._transformers.layer_range`). Backpropagation
stops at the lowest adapted layer either way; the trunk adds that the frozen
layers' *forward* is paid once instead of once per epoch and per evaluation.

The outputs are those of the whole model: the adapted layers see exactly the
hidden states the trunk would hand them (``tests/training/test_trunk.py``
checks losses and label scores against the full model to 1e-5).
Kept states are limited to ``training.frozen_cache_mb``: training rows that
would not fit are never computed ahead (every batch then runs the whole model,
as without a trunk), and an evaluated chunk past it runs its trunk each time.

>>> trunk = FrozenTrunk.of(peft_model, budget_mb=2048)  # doctest: +SKIP
>>> trunk.depth  # doctest: +SKIP
24
"""

from __future__ import annotations

import time
from typing import Any, Callable, Hashable, Sequence

import torch

from .._transformers import decoder_layer_count, layer_range, splittable, text_config


def frozen_depth(model: Any) -> int:
    """How many leading decoder layers of ``model`` (a ``PeftModel``) are frozen, unadapted and deterministic.

    0 when nothing can be kept: a prompt-learning adapter (its prefix enters every layer),
    a trainable embedding, dropout inside those layers, or an adapter on the first layer.
    """
    config = getattr(model, "active_peft_config", None)
    if config is None or getattr(config, "is_prompt_learning", False):
        return 0
    causal = model.get_base_model()
    body = causal.get_decoder()
    if not splittable(body) or any(p.requires_grad for p in body.get_input_embeddings().parameters()):
        return 0
    depth = next((i for i, layer in enumerate(body.layers) if any(p.requires_grad for p in layer.parameters())),
                 len(body.layers))
    if depth == len(body.layers) or float(getattr(text_config(causal.config), "attention_dropout", 0.0) or 0.0) > 0:
        return 0
    dropping = any(isinstance(m, torch.nn.Dropout) and m.p > 0 for layer in body.layers[:depth] for m in layer.modules())
    return 0 if dropping else depth


class FrozenTrunk:
    """The kept outputs of a model's frozen first ``depth`` decoder layers (see the module docstring)."""

    def __init__(self, model: Any, depth: int, *, budget_mb: float):
        self.model, self.depth = model, depth
        self.layers = decoder_layer_count(model.get_base_model())
        self.budget = budget_mb * 2**20
        self.kept_bytes = 0
        self.seconds = 0.0  # spent computing trunk outputs (what a run pays once instead of every epoch)
        self._kept: dict[Hashable, Any] = {}

    @classmethod
    def of(cls, model: Any, *, budget_mb: float) -> FrozenTrunk | None:
        """The trunk of a ``PeftModel``, or ``None`` when it has no frozen layers or ``budget_mb`` is 0."""
        depth = frozen_depth(model) if budget_mb > 0 else 0
        return cls(model, depth, budget_mb=budget_mb) if depth else None

    @property
    def body(self) -> Any:
        return self.model.get_base_model().get_decoder()

    def trunk(self) -> Any:
        """A block in which the body runs the frozen layers only (unnormalised output)."""
        return layer_range(self.body, 0, self.depth, final_norm=False)

    def top(self) -> Any:
        """A block in which the body runs the adapted layers only, from ``inputs_embeds``."""
        return layer_range(self.body, self.depth, self.layers)

    def kept(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """``compute()``'s trunk outputs for ``key``, computed once while the budget lasts."""
        found = self._kept.get(key)
        if found is not None:
            return found
        started = time.perf_counter()
        with torch.no_grad():
            value = compute()
        self.seconds += time.perf_counter() - started
        size = sum(t.numel() * t.element_size() for t in _tensors(value))
        if self.kept_bytes + size <= self.budget:
            self._kept[key] = value
            self.kept_bytes += size
        return value

    def row_states(self, examples: Sequence[Any], indices: Sequence[int], *, pad_id: int,
                   batch_size: int = 32) -> torch.Tensor | None:
        """``[len(indices), T, H]`` trunk outputs of those examples (right-padded with zeros), ``T`` their longest;
        ``None`` when the list's states do not fit the budget (the batch then runs the whole model).

        The first call for an ``examples`` list computes all of them once, length-sorted in
        batches whose shared prompt prefix runs once (the list is kept with them, so it is the
        same list that later calls name).
        """
        states = self.prepare(examples, pad_id=pad_id, batch_size=batch_size)
        if states is None:
            return None
        rows = [states[i] for i in indices]
        width = max(len(r) for r in rows)
        padded = rows[0].new_zeros(len(rows), width, rows[0].shape[-1])
        for r, row in enumerate(rows):
            padded[r, :len(row)] = row
        return padded

    def prepare(self, examples: Sequence[Any], *, pad_id: int, batch_size: int = 32,
                progress: str | None = None) -> list[torch.Tensor] | None:
        """The trunk outputs ``[len, H]`` of every example, computed now if they are not kept yet
        (``progress``: the label of a row-counting bar on stderr); ``None``, computing nothing, when
        they would not fit the budget."""
        key = ("rows", id(examples))
        if key not in self._kept and self.kept_bytes + self._row_bytes(examples) > self.budget:
            return None
        return self.kept(("rows", id(examples)), lambda: (examples, self._all_rows(examples, pad_id, batch_size,
                                                                                   progress)))[1]

    def _row_bytes(self, examples: Sequence[Any]) -> int:
        """The memory the trunk outputs of ``examples`` take (one ``[len, H]`` tensor each)."""
        embeddings = self.body.get_input_embeddings().weight
        return sum(len(e) for e in examples) * embeddings.shape[1] * embeddings.element_size()

    def _all_rows(self, examples: Sequence[Any], pad_id: int, batch_size: int,
                  progress: str | None) -> list[torch.Tensor]:
        from .batching import collate, plan_batches
        from .lm_loss import decoder_hidden_states
        from .progress import row_bar

        device = self.body.get_input_embeddings().weight.device
        states: list[Any] = [None] * len(examples)
        with self.trunk(), row_bar(progress, len(examples), leave=False) as bar:
            for indices in plan_batches([len(e) for e in examples], batch_size=batch_size, seed=None):
                batch = collate([examples[i] for i in indices], pad_id=pad_id, share_prefix=True).to(device)
                hidden = decoder_hidden_states(self.model, batch.input_ids, batch.attention_mask, None,
                                               batch.shared_prefix, keep_prefix=True)
                for r, i in enumerate(indices):
                    states[i] = hidden[r, :len(examples[i])].clone()
                bar.update(len(indices))
        return states


def attach_states(batch: Any, trunk: FrozenTrunk | None, examples: Sequence[Any], indices: Sequence[int], *,
                  pad_id: int) -> Any:
    """``batch`` (padded rows of ``examples[indices]``) carrying the trunk's outputs for the whole rows, if any."""
    if trunk is not None:
        batch.trunk_hidden = trunk.row_states(examples, indices, pad_id=pad_id)  # None: past the budget
    return batch


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _tensors(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _tensors(item)]
    return []
