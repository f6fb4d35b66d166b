"""The inputs every side receives: forward batches, generation prompts, row-to-adapter maps.

Both sides always get identical inputs, built here once.

>>> mixed_names(["a", "b", "c"], rows=5)
['a', 'b', 'c', 'a', 'b']
"""

from __future__ import annotations

from typing import Any, Sequence

_PROMPTS = (
    "A patient reports chest tightness when climbing stairs. Which specialist should see them first?",
    "Summarise the effect of a surprise interest-rate cut on bank shares in two sentences.",
    "Explain what an indemnification clause in a supply contract protects against.",
    "Draft a short reply telling a client that the quarterly report will be delayed by a week.",
    "What questions should a nurse ask someone with a sudden, severe headache?",
    "List two risks of signing a contract governed by the laws of a foreign country.",
)


def forward_batch(vocab_size: int, *, batch: int, tokens: int, device: str, seed: int = 0) -> dict[str, Any]:
    """``{"input_ids", "attention_mask"}`` of random tokens (no padding), ``[batch, tokens]``."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    # stay clear of the special tokens at the ends of the vocabulary
    input_ids = torch.randint(10, max(11, vocab_size - 10), (batch, tokens), generator=generator)
    return {"input_ids": input_ids.to(device), "attention_mask": torch.ones_like(input_ids).to(device)}


def mixed_names(names: Sequence[str], *, rows: int) -> list[str]:
    """Row ``i`` uses ``names[i % len(names)]``: every adapter gets rows, interleaved (the hard case)."""
    return [names[index % len(names)] for index in range(rows)]


def generation_prompts(rows: int) -> list[str]:
    """``rows`` user messages cycling through a fixed, domain-flavoured set."""
    return [_PROMPTS[index % len(_PROMPTS)] for index in range(rows)]
