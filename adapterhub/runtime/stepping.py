"""Step-wise generation over rows of any adapters: what a continuous-batching scheduler drives.

``hub.generate`` runs a whole batch to the end. A server instead keeps one
*running batch* and changes it between tokens: new prompts are prefilled and
join it, finished rows leave at once. A :class:`Stepper` exposes exactly those
moves; choosing which rows go when (and sampling) is the caller's business.

Every row keeps its own KV cache inside one batched cache, left-padded to a
common width; the attention mask hides the padding and each row carries its own
next position, so a row computes what it computes alone::

    cache keys/values per layer: [rows, kv_heads, T, head_dim]
    mask:                        [rows, T]   1 where row i has a real (or prefix) entry
    positions:                   [rows]      next position id of each row

Layer-method rows (LoRA) are routed per row (``batch.routed``); a prefix adapter's virtual
tokens are cache entries put in at prefill, so later steps need nothing more. Which rows go
through the layers is decided once, at prefill, by the residency's routing
(``runtime.methods.route``); merging, reordering and dropping rows carries those row slots along.
Pins go through the hub's :class:`~adapterhub.runtime.residency.Residency` only: every release
wakes the loads waiting for a slot.

>>> stepper = hub.stepper()  # doctest: +SKIP
>>> entry = stepper.acquire("finance")  # doctest: +SKIP
>>> batch, logits = stepper.prefill([stepper.encode("Revenue fell", entry)], [entry], rows=["r1"])  # doctest: +SKIP
>>> logits = stepper.decode(batch, [int(logits[0].argmax())])  # doctest: +SKIP
>>> stepper.release(entry)  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from .._transformers import cache_layers, last_positions, text_config
from ..errors import ConfigError
from ..prompts import TaskSpec, prompt_ids, render_prompt
from ..tokens import left_pad, pad_id_of, prefixed_inputs
from . import generation, mixing
from .batch import BARE, RowSlots, routed
from .residency import Held

if TYPE_CHECKING:
    from .hub import AdapterHub


@dataclass
class StepBatch:
    """The running batch: one batched KV cache and, per row, its adapter and next position.

    ``rows`` holds the caller's objects (one per row, in batch order); :meth:`Stepper.merge`
    and :meth:`Stepper.keep` reorder and drop them together with the cache rows.
    """

    cache: Any  # DynamicCache, [rows, kv_heads, T, head_dim] per layer
    mask: Any  # [rows, T] long
    positions: Any  # [rows] long
    entries: list[Held | None]
    rows: list[Any]
    lora: RowSlots | None = None  # the layer slot of every row (from the routing at prefill), None: no layer rows

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def width(self) -> int:
        """``T``: cache entries per row, padding included."""
        return int(self.mask.shape[1])


class Stepper:
    """Prefill, decode, merge and drop rows of a running batch on one hub's base.

    Get one with :meth:`AdapterHub.stepper`. Adapters a row uses are pinned from
    :meth:`acquire` to :meth:`release`, so eviction never removes them mid-answer.
    """

    def __init__(self, hub: AdapterHub) -> None:
        self.residency = hub.residency
        self.model = hub.base.model
        self.tokenizer = hub.tokenizer
        self.device = self.residency.device
        text = text_config(self.model.config)
        self.context_length = int(getattr(text, "max_position_embeddings", 0) or 2048)
        generation_config = getattr(self.model, "generation_config", None)  # encoders have none
        eos = getattr(generation_config, "eos_token_id", None)
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.eos_ids = frozenset([eos] if isinstance(eos, int) else (eos or []))
        self.pad_id = pad_id_of(self.tokenizer)

    # --- adapters -----------------------------------------------------------------
    def acquire(self, ref: str | None) -> Held | None:
        """Resolve ``ref`` (a resident name, a registry reference, a weighted mix string, ``None`` for the
        bare base) and pin it until :meth:`release`.

        A versioned reference (``legal@2``) or ``hf://`` reference stays resident under that
        exact string, so it never displaces another version a running row uses.

        Raises:
            UnknownDomainError, AdapterNotFoundError, IntegrityError, IncompatibleBaseError,
            InvalidAdapterError, MemoryBudgetError: as :meth:`AdapterHub.load`.
        """
        if ref is None:
            return None
        mix = mixing.parse_mix(ref)
        if mix is not None:
            return self.residency.pin_mix(mix, exact=True)
        return self.residency.pin(ref, exact=True)

    def release(self, entry: Held | None) -> None:
        """Unpin what :meth:`acquire` returned (``None`` is a no-op); loads waiting for a slot wake at once."""
        self.residency.unpin(entry)

    def prefix_tokens(self, entry: Held | None) -> int:
        """Virtual tokens a row of ``entry`` carries in its cache (0 unless it is a prefix adapter)."""
        return self.residency.prefix_tokens(entry)

    # --- prompts ------------------------------------------------------------------
    def task(self, entry: Held | None) -> TaskSpec:
        return entry.task if entry is not None else TaskSpec()

    def encode(self, text: str, entry: Held | None, *, chat: bool = True) -> list[int]:
        """Token ids of ``text`` rendered as ``hub.generate(text, chat=chat)`` renders it for this adapter."""
        return generation.encode(self.tokenizer, [text], [self.task(entry)], chat=chat)[0]

    def encode_messages(self, messages: Sequence[dict[str, str]], entry: Held | None) -> list[int]:
        """Token ids of a chat conversation, rendered the way the adapter was taught.

        One user message (with no system message) is exactly ``hub.generate(content)``'s prompt.
        Otherwise the base's chat template renders the conversation; the adapter's system
        prompt is added when the conversation has none, and its prompt template wraps the
        last user message.

        Raises:
            ConfigError: no messages, or the last message is not the user's.
        """
        task = self.task(entry)
        if not messages:
            raise ConfigError("messages must hold at least one message")
        if messages[-1]["role"] != "user":
            raise ConfigError(f"the last message must be the user's, got role {messages[-1]['role']!r}")
        if len(messages) == 1:
            return prompt_ids(self.tokenizer, render_prompt(self.tokenizer, task, messages[0]["content"]))
        if not (task.chat and getattr(self.tokenizer, "chat_template", None)):
            text = "\n".join(m["content"] for m in messages[:-1]) + "\n" + task.user_message(messages[-1]["content"])
            return prompt_ids(self.tokenizer, text)
        conversation = [dict(m) for m in messages]
        conversation[-1]["content"] = task.user_message(conversation[-1]["content"])
        if task.system_prompt and not any(m["role"] == "system" for m in conversation):
            conversation.insert(0, {"role": "system", "content": task.system_prompt})
        rendered = self.tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        return prompt_ids(self.tokenizer, rendered)

    # --- steps --------------------------------------------------------------------
    def prefill(self, prompts: Sequence[Sequence[int]], entries: Sequence[Held | None], *,
                rows: Sequence[Any]) -> tuple[StepBatch, Any]:
        """Run new prompts (left-padded together) and return their batch and next-token logits ``[n, vocab]``."""
        import torch
        from transformers import DynamicCache

        if not prompts or len(prompts) != len(entries) or len(rows) != len(prompts):
            raise ConfigError("prefill needs one adapter entry and one row object per prompt")
        if any(len(ids) == 0 for ids in prompts):
            raise ConfigError("a prompt must hold at least one token")
        input_ids, attention_mask = left_pad(prompts, pad_id=self.pad_id, device=self.device)
        routing = self.residency.routing(list(entries))
        mask, positions, cache = prefixed_inputs(attention_mask, routing.prefix)
        if cache is None:
            cache = DynamicCache(config=self.model.config)
        with routing.applied(), torch.inference_mode():
            last = last_positions(input_ids.shape[1], device=self.device)
            logits = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, cache=cache,
                                use_cache=True, logits_to_keep=last).logits[:, -1]
        batch = StepBatch(cache=cache, mask=mask.long(), positions=positions[:, -1] + 1, entries=list(entries),
                          rows=list(rows), lora=routing.layers)
        return batch, logits

    def decode(self, batch: StepBatch, tokens: Sequence[int]) -> Any:
        """Feed one token per row (in batch order); returns next-token logits ``[rows, vocab]``."""
        import torch

        if len(tokens) != len(batch):
            raise ConfigError(f"decode got {len(tokens)} tokens for {len(batch)} rows")
        input_ids = torch.tensor(list(tokens), dtype=torch.long, device=self.device)[:, None]
        batch.mask = torch.cat([batch.mask, batch.mask.new_ones((len(batch), 1))], dim=1)
        with routed(batch.lora), torch.inference_mode():
            logits = self.model(input_ids=input_ids, attention_mask=batch.mask, position_ids=batch.positions[:, None],
                                cache=batch.cache, use_cache=True).logits[:, -1]
        batch.positions = batch.positions + 1
        return logits

    def merge(self, running: StepBatch | None, joining: StepBatch) -> StepBatch:
        """One batch of both (caches left-padded to a common width), rows grouped by adapter."""
        import torch

        if running is None or len(running) == 0:
            return self._ordered(joining)
        width = max(running.width, joining.width)
        keys, values = [], []
        for old, new in zip(_layers(running.cache), _layers(joining.cache)):
            keys.append(torch.cat([_pad_left(old[0], width), _pad_left(new[0], width)], dim=0))
            values.append(torch.cat([_pad_left(old[1], width), _pad_left(new[1], width)], dim=0))
        mask = torch.cat([_pad_left(running.mask, width, dim=1), _pad_left(joining.mask, width, dim=1)], dim=0)
        merged = StepBatch(cache=self._cache(keys, values), mask=mask,
                           positions=torch.cat([running.positions, joining.positions]),
                           entries=running.entries + joining.entries, rows=running.rows + joining.rows)
        return self._ordered(merged, _layer_slots(running) + _layer_slots(joining))

    def keep(self, batch: StepBatch, rows: Sequence[Any]) -> StepBatch | None:
        """The batch with only ``rows`` (a subset of ``batch.rows``, compared by identity); ``None`` if empty.

        Cache columns no remaining row uses are dropped.
        """
        import torch

        wanted = {id(row) for row in rows}
        index = [i for i, row in enumerate(batch.rows) if id(row) in wanted]
        if not index:
            return None
        if len(index) == len(batch):
            return batch
        picked = torch.tensor(index, dtype=torch.long, device=self.device)
        mask = batch.mask.index_select(0, picked)
        used = torch.nonzero(mask.any(dim=0)).flatten()
        start = int(used[0]) if used.numel() else 0
        keys = [layer[0].index_select(0, picked)[:, :, start:] for layer in _layers(batch.cache)]
        values = [layer[1].index_select(0, picked)[:, :, start:] for layer in _layers(batch.cache)]
        slots = _layer_slots(batch)
        return StepBatch(cache=self._cache(keys, values), mask=mask[:, start:].contiguous(),
                         positions=batch.positions.index_select(0, picked), entries=[batch.entries[i] for i in index],
                         rows=[batch.rows[i] for i in index], lora=self._lora([slots[i] for i in index]))

    # --- internals ----------------------------------------------------------------
    def _ordered(self, batch: StepBatch, slots: Sequence[int] | None = None) -> StepBatch:
        """Rows of one adapter side by side (each LoRA layer then works on views), their layer slots along.

        ``slots``: the rows' layer slots when ``batch.lora`` is still to be built (a merge): it is built once,
        in the final order.
        """
        import torch

        order = sorted(range(len(batch)), key=lambda i: _slot(batch.entries[i]))
        if order != list(range(len(batch))):
            picked = torch.tensor(order, dtype=torch.long, device=self.device)
            keys = [layer[0].index_select(0, picked) for layer in _layers(batch.cache)]
            values = [layer[1].index_select(0, picked) for layer in _layers(batch.cache)]
            slots = [(_layer_slots(batch) if slots is None else slots)[i] for i in order]
            batch = StepBatch(cache=self._cache(keys, values), mask=batch.mask.index_select(0, picked),
                              positions=batch.positions.index_select(0, picked),
                              entries=[batch.entries[i] for i in order], rows=[batch.rows[i] for i in order])
        if slots is not None:
            batch.lora = self._lora(slots)
        return batch

    def _lora(self, slots: Sequence[int]) -> RowSlots | None:
        """The layer routing of rows whose layer slots (as the prefill's routing gave them) are ``slots``."""
        return RowSlots.build(slots, device=self.device) if any(s != BARE for s in slots) else None

    def _cache(self, keys: list[Any], values: list[Any]) -> Any:
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        for layer, (k, v) in enumerate(zip(keys, values)):
            cache.update(k, v, layer)
        return cache


def _slot(entry: Held | None) -> int:
    return BARE if entry is None else entry.slot


def _layer_slots(batch: StepBatch) -> list[int]:
    """Each row's slot in the adapter layers (``BARE`` for bare and prefix rows), as routed at prefill."""
    return list(batch.lora.slots) if batch.lora is not None else [BARE] * len(batch)


def _layers(cache: Any) -> list[tuple[Any, Any]]:
    return [(layer.keys, layer.values) for layer in cache_layers(cache)]


def _pad_left(tensor: Any, width: int, *, dim: int = 2) -> Any:
    """``tensor`` with zeros prepended along ``dim`` up to ``width``."""
    import torch

    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)
