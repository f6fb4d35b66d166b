"""Routed forward passes and ``generate`` for the runtime.

Batches are built the way :mod:`adapterhub.tokens` describes: left-padded, each
row behind its own prefix cache (if any), positions following the mask.
"""

from __future__ import annotations

from typing import Any, Sequence

from ..errors import AdapterHubError, ConfigError
from ..prompts import TaskSpec, prompt_ids, render_prompt
from ..tokens import prefixed_inputs


def encode(tokenizer: Any, texts: Sequence[str], tasks: Sequence[TaskSpec], *, chat: bool) -> list[list[int]]:
    """Token ids per text: rendered the way each row's adapter was taught (``chat``), else the raw text."""
    if not chat:
        return [tokenizer(text)["input_ids"] for text in texts]
    return [prompt_ids(tokenizer, render_prompt(tokenizer, task, text)) for text, task in zip(texts, tasks)]


def forward_logits(model: Any, input_ids: Any, attention_mask: Any, prefix: Any = None) -> Any:
    """Logits ``[batch, seq, vocab]`` of one forward pass, prefixes included (see :func:`prefixed_inputs`).

    Without prefixes this is exactly ``model(input_ids, attention_mask)``.
    """
    if prefix is None:
        return model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    mask, positions, cache = prefixed_inputs(attention_mask, prefix)
    return model(input_ids=input_ids, attention_mask=mask, position_ids=positions, cache=cache,
                 use_cache=True).logits


def expansion(model: Any, generate_kwargs: dict[str, Any]) -> int:
    """How many rows ``generate`` makes of each prompt (beams or returned sequences)."""
    config = generate_kwargs.get("generation_config") or model.generation_config
    beams = generate_kwargs.get("num_beams", getattr(config, "num_beams", 1)) or 1
    sequences = generate_kwargs.get("num_return_sequences", getattr(config, "num_return_sequences", 1)) or 1
    return max(int(beams), int(sequences))


def generate_tokens(model: Any, input_ids: Any, attention_mask: Any, prefix: Any = None, **kwargs: Any) -> Any:
    """New token ids ``[batch * num_return_sequences, new]`` from transformers' ``generate``.

    ``prefix`` (already expanded to the beam rows) is passed as the starting
    cache with its mask columns; ``generate`` continues from it.
    """
    import torch

    if prefix is not None:
        kwargs["cache"] = prefix.cache
        # generate repeats the mask for beams itself; the cache it takes as it is
        attention_mask = torch.cat([prefix.mask[::prefix.repeat], attention_mask.to(prefix.mask.dtype)], dim=1)
    try:
        output = model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    except ValueError as error:
        if isinstance(error, AdapterHubError):
            raise
        raise ConfigError(f"transformers' generate rejected the options {sorted(kwargs)}: {error}") from error
    return output[:, input_ids.shape[1]:]


def grouped_order(slots: Sequence[int]) -> list[int]:
    """Row indices with the rows of one adapter side by side (stable), so each layer's update works on views.

    >>> grouped_order([5, -1, 5, 3])
    [1, 3, 0, 2]
    """
    return sorted(range(len(slots)), key=slots.__getitem__)


def restore_order(new_tokens: Any, order: Sequence[int], *, per_prompt: int = 1) -> Any:
    """Rows generated in ``order`` (``per_prompt`` consecutive rows each) back in the caller's order."""
    import torch

    position = torch.empty(len(order), dtype=torch.long)
    position[torch.tensor(order, dtype=torch.long)] = torch.arange(len(order))  # the inverse permutation
    rows = (position[:, None] * per_prompt + torch.arange(per_prompt)).reshape(-1)
    return new_tokens[rows.to(new_tokens.device)]
