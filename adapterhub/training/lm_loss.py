"""The training loss: next-token cross-entropy computed only where a label is supervised.

A plain causal-LM forward projects *every* position onto the vocabulary
(``[batch, tokens, vocab]`` logits — for SmolLM2 that is 49k floats per
token) and then throws most of them away because prompt and padding tokens
carry no loss. :class:`SupervisedLM` instead runs the decoder body, gathers
the hidden states of the ``N`` supervised positions listed in a
:class:`~adapterhub.training.data.Batch`, and applies the LM head to those ``N``
vectors only. The loss is identical; the head's compute and the logits'
memory shrink by the prompt-to-answer ratio.

It works for LoRA (the adapters live inside the body's linear layers), for
prefix tuning (the prefix enters as the body's key/value cache, exactly as
PEFT's own forward builds it) and for a plain model. When every row of a
batch starts with the same tokens (a prompt template's instruction, a chat template's system block), the
batch may carry them once as ``shared_prefix``: they go through the layers once, packed in one
sequence with the rows behind them, and every row attends to their keys/values — the same
attention, computed once (:mod:`adapterhub.training.packed_prefix`).

>>> model = SupervisedLM(peft_model)  # doctest: +SKIP
>>> loss_sum = model(**batch_inputs(batch))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .._transformers import broadcast_cache, cache_argument, cache_of
from .packed_prefix import PackedLayout, packable, packed_rows


def causal_lm(model: Any) -> Any:
    """The transformers causal LM inside a ``PeftModel`` (adapter layers included), or ``model`` itself."""
    return model.get_base_model() if hasattr(model, "active_peft_config") else model


def decoder_hidden_states(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                          position_ids: torch.Tensor | None, shared_prefix: torch.Tensor | None = None, *,
                          keep_prefix: bool = False, embedded: bool = False) -> torch.Tensor:
    """Final hidden states ``[R, T, H]`` of the decoder body, with the active adapter applied.

    Args:
        model: a ``peft.PeftModel`` (LoRA or prefix tuning) over a causal LM, or a plain causal LM.
        input_ids: ``[R, T]`` token ids.
        attention_mask: ``[R, T]`` 1 for real tokens (right padding), or ``None`` for packed rows.
        position_ids: ``[R, T]`` per-example positions for packed rows, else ``None``.
        shared_prefix: ``[P]`` tokens that precede every (right-padded, unpacked) row: they run once, in one
            packed pass with the rows, and every row attends to their keys/values (only the hidden states of
            ``input_ids`` are returned).
        keep_prefix: return ``[R, P + T, H]``: the shared prefix's hidden states in front of every row's.
        embedded: ``input_ids`` and ``shared_prefix`` are hidden states (``[R, T, H]``, ``[P, H]``) entering
            the body's first layer, e.g. a frozen trunk's outputs under :meth:`FrozenTrunk.top`.
    """
    body = causal_lm(model).get_decoder()
    config = getattr(model, "active_peft_config", None)
    key = "inputs_embeds" if embedded else "input_ids"
    rows, length, cache, cached = input_ids.shape[0], input_ids.shape[1], None, 0
    if attention_mask is None and (shared_prefix is not None or getattr(config, "is_prompt_learning", False)):
        attention_mask = torch.ones(rows, length, dtype=torch.long, device=input_ids.device)
    if getattr(config, "is_prompt_learning", False):  # prefix tuning: the prefix is a key/value cache
        cached = config.num_virtual_tokens
        shared = 0 if shared_prefix is None else shared_prefix.shape[0]
        cache = model.get_prompt(1 if shared else rows, max_cache_len=cached + shared + rows * length)
    cache_kwargs = {cache_argument(body): cache} if cache is not None else {"use_cache": False}
    if shared_prefix is not None and packable(body):  # one packed pass: the start, then every row
        layout = PackedLayout.of(prefix=shared_prefix.shape[0], attention_mask=attention_mask, cached=cached)
        positions = layout.positions(input_ids.device)
        with packed_rows(body, layout):
            packed = body(**{key: layout.pack(shared_prefix, input_ids)}, position_ids=positions,
                          **cache_kwargs).last_hidden_state
        start, hidden = layout.unpack(packed)
        return torch.cat([start.expand(rows, -1, -1), hidden], dim=1) if keep_prefix else hidden
    start = None
    if shared_prefix is not None:  # an attention the packed pass does not know: the start as a batch of one
        mask = torch.ones(1, cached + shared_prefix.shape[0], dtype=torch.long, device=input_ids.device)
        output = body(**{key: shared_prefix[None]}, attention_mask=mask, use_cache=True,
                      **({cache_argument(body): cache} if cache is not None else {}))
        cache, start = cache_of(output), output.last_hidden_state[0]
        broadcast_cache(cache, rows)  # one computed start, viewed by every row
        cached += shared_prefix.shape[0]
        cache_kwargs = {cache_argument(body): cache}
    if cache is not None:
        attention_mask = torch.cat([attention_mask.new_ones(rows, cached), attention_mask], dim=1)
    hidden = body(**{key: input_ids}, attention_mask=attention_mask, position_ids=position_ids,
                  **cache_kwargs).last_hidden_state
    return torch.cat([start.expand(rows, -1, -1), hidden], dim=1) if keep_prefix and start is not None else hidden


class SupervisedLM(torch.nn.Module):
    """Summed cross-entropy over the supervised positions of a batch (LM head applied there only).

    Wrapping the PEFT model in a module (rather than calling a function) lets
    ``accelerate``/DDP see one forward per micro-batch for gradient syncing.
    """

    def __init__(self, model: Any, trunk: Any = None):
        super().__init__()
        self.model = model  # a PeftModel (or a plain causal LM, e.g. to score the bare base)
        self.trunk = trunk  # a FrozenTrunk: batches may then carry its outputs as trunk_hidden

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, position_ids: torch.Tensor | None,
                target_rows: torch.Tensor, target_cols: torch.Tensor, targets: torch.Tensor,
                shared_prefix: torch.Tensor | None = None, trunk_hidden: torch.Tensor | None = None) -> torch.Tensor:
        """Sum (not mean) of the token losses, float32: callers normalise over a whole optimizer step.

        ``trunk_hidden`` (``[R, T, H]``, the frozen trunk's outputs for these padded rows)
        replaces the trunk: only the layers above it run.
        """
        if trunk_hidden is None:
            hidden = decoder_hidden_states(self.model, input_ids, attention_mask, position_ids, shared_prefix)
        else:  # the trunk's outputs for whole rows: a shared prefix is their first P positions, in every row
            shared = 0 if shared_prefix is None else shared_prefix.numel()
            with self.trunk.top():
                hidden = decoder_hidden_states(self.model, trunk_hidden[:, shared:], attention_mask, position_ids,
                                               trunk_hidden[0, :shared] if shared else None, embedded=True)
        selected = hidden[target_rows, target_cols]  # [N, H]
        logits = causal_lm(self.model).get_output_embeddings()(selected)  # [N, V]
        return F.cross_entropy(logits.float(), targets, reduction="sum")


def batch_inputs(batch: Any) -> dict[str, torch.Tensor | None]:
    """The keyword arguments of :meth:`SupervisedLM.forward` from a :class:`~adapterhub.training.data.Batch`."""
    return {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "position_ids": batch.position_ids,
            "target_rows": batch.target_rows, "target_cols": batch.target_cols, "targets": batch.targets,
            "shared_prefix": batch.shared_prefix, "trunk_hidden": batch.trunk_hidden}
