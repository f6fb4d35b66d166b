"""Start prefix tuning from real text instead of random numbers.

A prefix is, per layer, the keys and values of ``num_virtual_tokens`` extra
positions in front of every input. PEFT initialises them at random, which
first garbles the frozen model; with few examples much of the budget is
spent undoing that. :func:`init_prefix_from_text` sets them to the keys and
values the base itself computes for a piece of text (say, a description of
the task), so training starts from a model that behaves exactly as if that
text were in its context (Li & Liang, 2021, §7.2: "initialising with real
words" helps most in low-data settings).

>>> init_prefix_from_text(peft_model, tokenizer, "Contract clause types: ...")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import torch

from .errors import RecipeError


def init_prefix_from_text(peft_model: Any, tokenizer: Any, text: str) -> None:
    """Overwrite a prefix-tuning adapter's prefix with the base's keys/values for ``text``.

    The text is tokenized and cut (or repeated) to ``num_virtual_tokens`` tokens.

    Args:
        peft_model: a ``PeftModel`` with a prefix-tuning adapter (no ``prefix_projection``).
        tokenizer: the base tokenizer.
        text: any text; a task description works well.

    Raises:
        RecipeError: the text is empty or the adapter is not a plain prefix.
    """
    config = peft_model.active_peft_config
    if config.peft_type != "PREFIX_TUNING" or config.prefix_projection:
        raise RecipeError("adapter.prefix_init_text needs adapter.method 'prefix' without prefix_projection")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise RecipeError("adapter.prefix_init_text is empty; give a task description or set it to null")
    length = config.num_virtual_tokens
    ids = (ids * (length // len(ids) + 1))[:length]
    body = peft_model.get_base_model().get_decoder()
    embedding = peft_model.prompt_encoder[peft_model.active_adapter].embedding.weight  # [tokens, layers*2*kv_dim]
    with torch.no_grad():
        output = body(input_ids=torch.tensor([ids], device=embedding.device), use_cache=True)
        cache = output.cache if getattr(output, "cache", None) is not None else output.past_key_values
        per_layer = [torch.stack([layer.keys[0], layer.values[0]]) for layer in cache.layers]  # [2, heads, tokens, dim]
        stacked = torch.stack(per_layer)  # [layers, 2, heads, tokens, dim]
        # PEFT reads row t as view(layers * 2, heads, dim): layer-major, then key/value, then head
        embedding.copy_(stacked.permute(3, 0, 1, 2, 4).reshape(length, -1).to(embedding.dtype))
