"""The edge checks of one request, before any work is done for it: sampling ranges, the canonical spelling of a
model reference (and its mix weights), the size of a prompt in characters, and an admin's ``lora_name``.

Each refusal is a 400 :class:`~.protocol.ServeError` naming the field and the fix. Values inside these bounds can
still make one row's logits go bad; the scheduler then fails that row alone.

>>> canonical_model("legal@007")
'legal@7'
>>> canonical_model("legal@latest")
'legal'
>>> canonical_model("finance:0.7+legal@02:0.3")
'finance:0.7+legal@2:0.3'
"""

from __future__ import annotations

import math
from typing import Any, Iterable

from ..errors import AdapterHubError
from ..registry.refs import LATEST, parse_ref, validate_name
from ..runtime.mixing import format_mix, parse_mix
from .protocol import ServeError

MIN_TEMPERATURE = 1e-3  # below this (and above 0) logits / temperature overflows: use 0 for greedy
MIN_TOP_P = 1e-6
SEED_RANGE = (-(2**63), 2**64 - 1)  # what a torch generator takes
MAX_MIX_WEIGHT = 100.0  # |weight| of one adapter in a mix
MAX_CLASSIFY_INPUTS = 256  # texts in one /v1/classify or /v1/tag request


def check_sampling(*, temperature: float | None, top_p: float | None, seed: Any) -> None:
    """Refuse sampling values a row could not survive.

    Raises:
        ServeError: 400 a temperature in (0, 1e-3), a non-finite one, a top_p under 1e-6 or a seed outside 64 bits.
    """
    if temperature is not None and (not math.isfinite(temperature) or 0 < temperature < MIN_TEMPERATURE):
        raise _invalid(f"temperature={temperature!r} is out of range: use 0 for greedy decoding or a value "
                       f">= {MIN_TEMPERATURE:g}")
    if top_p is not None and not MIN_TOP_P <= top_p <= 1:
        raise _invalid(f"top_p={top_p!r} is out of range: use a value in [{MIN_TOP_P:g}, 1]")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                             or not SEED_RANGE[0] <= seed <= SEED_RANGE[1]):
        raise _invalid(f"seed={seed!r} is out of range: use a whole number within 64 bits (0 to 2**64 - 1)")


def canonical_model(model: str, *, latest_is_bare: bool = True) -> str:
    """One spelling per (name, version): ``legal@01`` -> ``legal@1``, ``legal@latest`` -> ``legal`` (only while
    ``latest_is_bare``: a server with a default channel reads a bare name as ``name@channel``); in a mix, each
    part so, with its weight checked. Paths, ``hf://`` references and malformed names pass unchanged (they fail
    later with their own errors).

    Raises:
        ServeError: 400 a mix weight that is not finite or over :data:`MAX_MIX_WEIGHT` in size, or a malformed mix.
    """
    try:
        mix = parse_mix(model)
    except AdapterHubError as error:
        raise _invalid(error.http_message) from None
    if mix is None:
        return _canonical_ref(model, latest_is_bare)
    for name, weight in mix.parts:
        if abs(weight) > MAX_MIX_WEIGHT:
            raise _invalid(f"mix weight {weight:g} of {name!r} is out of range: each weight must be within "
                           f"+-{MAX_MIX_WEIGHT:g}")
    weights: dict[str, float] = {}
    for name, weight in mix.parts:
        ref = _canonical_ref(name, latest_is_bare)
        if ref in weights:
            raise _invalid(f"{model[:200]!r} names {ref!r} twice; give each adapter once")
        weights[ref] = weight
    return format_mix(weights)


def _canonical_ref(ref: str, latest_is_bare: bool) -> str:
    if ref.startswith("hf://") or "@" not in ref:
        return ref
    try:
        name, selector = parse_ref(ref)
    except AdapterHubError:
        return ref
    if selector == LATEST:
        return name if latest_is_bare else f"{name}@{LATEST}"
    return f"{name}@{selector}"


def check_prompt_chars(texts: Iterable[str], *, context: int, chars_per_token: int) -> None:
    """Refuse a prompt whose characters alone prove it over the context, before tokenising it.

    No token is longer than ``chars_per_token`` characters, so ``chars > context * chars_per_token`` means
    more than ``context`` tokens.

    Raises:
        ServeError: 400 ``context_length_exceeded``.
    """
    chars = sum(len(text) for text in texts)
    bound = context * chars_per_token
    if chars > bound:
        raise ServeError(400, f"the prompt holds {chars} characters, more than this model's context of {context} "
                         f"tokens can hold (at most {bound} characters); shorten the prompt",
                         code="context_length_exceeded")


def longest_token_chars(tokenizer: Any) -> int:
    """Characters in the longest token of ``tokenizer``'s vocabulary (at least 1)."""
    longest = 1
    for token in tokenizer.get_vocab():
        longest = max(longest, len(token))
    return longest


def check_lora_name(name: str, *, reserved: Iterable[str], registered: bool, path: str | None) -> None:
    """An admin's ``lora_name``: never a base name; given a folder (``path``), the registry's name rules and never a
    registered name (it would shadow the registry's adapter for every key allowed it); without one, a registry
    reference to load (``legal@7``, ``hf://org/repo``).

    Raises:
        ServeError: 400 ``invalid_value``.
    """
    if name in set(reserved):
        raise _invalid(f"lora_name {name[:100]!r} is the base model's name; pick another name")
    try:
        if path is None or path == name:
            if not name.startswith("hf://"):
                parse_ref(name)
            return
        validate_name(name, what="lora_name")
    except AdapterHubError as error:
        raise _invalid(error.http_message) from None
    if registered and path is not None and path != name:
        raise _invalid(f"lora_name {name!r} is a registered adapter's name; loading {path!r} under it would shadow "
                       "it. Pick another name, or omit lora_path to load the registered adapter")


def check_inputs(texts: list[str], *, most: int = MAX_CLASSIFY_INPUTS) -> None:
    """Refuse more than ``most`` texts in one labelling request."""
    if len(texts) > most:
        raise _invalid(f"input holds {len(texts)} texts; send at most {most} per request")


def _invalid(message: str) -> ServeError:
    return ServeError(400, message, code="invalid_value")


class Lane:
    """One call at a time through a part that runs outside the scheduler (classify, tag), with a bounded line.

    ``async with lane:`` waits its turn; past ``waiting`` callers in line it answers 503 ``queue_full``.
    """

    def __init__(self, *, waiting: int, concurrent: int = 1) -> None:
        import asyncio

        self.waiting = waiting
        self._queued = 0
        self._slots = asyncio.Semaphore(concurrent)

    async def __aenter__(self) -> Lane:
        if self._queued >= self.waiting:
            raise ServeError(503, f"the server is at capacity ({self._queued} labelling requests waiting); retry "
                             "later", code="queue_full", headers={"Retry-After": "1"})
        self._queued += 1
        try:
            await self._slots.acquire()
        finally:
            self._queued -= 1
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self._slots.release()
