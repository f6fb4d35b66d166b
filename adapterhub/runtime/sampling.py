"""Choosing the next token of one row: greedy, or sampled with temperature / top-p from a seeded generator.

Greedy is ``argmax`` of the raw logits, exactly what transformers' ``generate``
does with ``do_sample=False``; each sampled row owns its ``torch.Generator``, so a
seed reproduces a row's answer whatever else shares the batch.

>>> import torch
>>> Sampler().pick(torch.tensor([0.1, 2.0, -1.0]))[0]
1
>>> a = Sampler(temperature=1.0, seed=7).pick(torch.tensor([0.0, 0.0, 0.0]))[0]
>>> b = Sampler(temperature=1.0, seed=7).pick(torch.tensor([0.0, 0.0, 0.0]))[0]
>>> a == b
True
"""

from __future__ import annotations

import math
import secrets
from typing import Any

from ..errors import ConfigError


class Sampler:
    """Per-row next-token choice.

    Args:
        temperature: ``0`` (or ``None``) is greedy; otherwise logits are divided by it.
        top_p: keep the smallest set of tokens whose probability reaches ``top_p`` (``None``/``1``: all).
        top_k: keep the ``top_k`` most likely tokens (``None``/``0``: all).
        seed: seeds this row's generator (default: a random seed, reported by :attr:`seed`).

    Raises:
        ConfigError: a value outside its range.
    """

    def __init__(self, *, temperature: float | None = None, top_p: float | None = None, top_k: int | None = None,
                 seed: int | None = None) -> None:
        if temperature is not None and temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {temperature}")
        if top_p is not None and not 0 < top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {top_p}")
        if top_k is not None and top_k < 0:
            raise ConfigError(f"top_k must be >= 0, got {top_k}")
        if temperature is not None and not math.isfinite(temperature):
            raise ConfigError(f"temperature must be a finite number, got {temperature}")
        if seed is not None and not -(2**63) <= seed < 2**64:
            raise ConfigError(f"seed must fit in 64 bits (0 to 2**64 - 1), got {seed}")
        self.greedy = not temperature
        self.temperature = float(temperature or 0.0)
        self.top_p = top_p
        self.top_k = top_k or None
        self.seed = seed if seed is not None else (None if self.greedy else secrets.randbits(63))
        self._generator: Any = None

    def pick(self, logits: Any) -> tuple[int, float]:
        """``(token id, its log-probability)`` from one row's next-token logits ``[vocab]``.

        Raises:
            ConfigError: the logits, or the probabilities this sampler makes of them, are not finite (NaN, or
                an overflow from the sampling settings or the adapter's weights): the row cannot go on.
        """
        import torch

        logits = logits.float()
        if bool(torch.isnan(logits).any()) or not bool(torch.isfinite(logits).any()):
            raise ConfigError("this row's logits are not finite (NaN or infinite): its adapter weights or mix "
                              "weights overflow")
        if self.greedy:
            token = int(torch.argmax(logits))
            return token, float(torch.log_softmax(logits, -1)[token])
        scaled = logits / self.temperature
        if self.top_k is not None and self.top_k < scaled.numel():
            kth = torch.topk(scaled, self.top_k).values[-1]
            scaled = scaled.masked_fill(scaled < kth, float("-inf"))
        if self.top_p is not None and self.top_p < 1:
            ordered, order = torch.sort(scaled, descending=True)
            cumulative = torch.softmax(ordered, -1).cumsum(-1)
            drop = cumulative - torch.softmax(ordered, -1) >= self.top_p  # keep the token that crosses top_p
            scaled = scaled.clone()
            scaled[order[drop]] = float("-inf")
        logprobs = torch.log_softmax(scaled, -1)
        if bool(torch.isnan(logprobs).any()):
            raise ConfigError(f"temperature={self.temperature:g} / top_p={self.top_p} make this row's probabilities "
                              "NaN; use temperature 0 (greedy) or >= 1e-3")
        if self._generator is None:
            self._generator = torch.Generator(device="cpu").manual_seed(int(self.seed))
        token = int(torch.multinomial(logprobs.exp().cpu(), 1, generator=self._generator))
        return token, float(logprobs[token])
