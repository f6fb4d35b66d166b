"""Token batches, routed forward passes and ``generate`` for the runtime.

Prompts are left-padded (generation appends on the right); positions follow
the attention mask, so a padded row computes what it computes alone. Rows with
a prefix adapter get a pre-filled cache (see ``methods/prefix.py``) and the
matching mask columns; transformers then derives positions from that mask,
which reproduces PEFT's prefix offsets row by row.
"""

from __future__ import annotations

from typing import Any, Sequence

from ..errors import AdapterHubError, ConfigError
from ..prompts import TaskSpec, prompt_ids, render_prompt


def encode(tokenizer: Any, texts: Sequence[str], tasks: Sequence[TaskSpec], *, chat: bool) -> list[list[int]]:
    """Token ids per text: rendered the way each row's adapter was taught (``chat``), else the raw text."""
    if not chat:
        return [tokenizer(text)["input_ids"] for text in texts]
    return [prompt_ids(tokenizer, render_prompt(tokenizer, task, text)) for text, task in zip(texts, tasks)]


def left_pad(rows: Sequence[Sequence[int]], *, pad_id: int, device: Any) -> tuple[Any, Any]:
    """``(input_ids, attention_mask)``, both ``[len(rows), longest]``, padded on the left."""
    import torch

    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            input_ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
            attention_mask[i, width - len(row):] = 1
    return input_ids.to(device), attention_mask.to(device)


def prefixed_inputs(attention_mask: Any, prefix: Any = None) -> tuple[Any, Any, Any]:
    """``(mask, position_ids, cache)`` for left-padded rows behind their prefixes (``cache`` ``None`` without).

    Position ``t`` of row ``i`` is ``prefix_tokens_i + (real tokens before t)``:
    PEFT's positions for that adapter alone, independent of padding.
    """
    import torch

    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    if prefix is None:
        return attention_mask, positions, None
    mask = torch.cat([prefix.mask, attention_mask.to(prefix.mask.dtype)], dim=1)
    return mask, positions + prefix.lengths[:, None], prefix.cache


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
