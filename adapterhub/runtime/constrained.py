"""Constrained rows: a sampler that masks each row's logits by its own grammar, and ``hub.generate`` over a
:class:`~adapterhub.runtime.stepping.Stepper` when rows carry schemas, stop strings or contract defaults.

The serving scheduler and :func:`generate_rows` run the same per-row loop: every row chooses its next
token with its own sampler; a :class:`ConstrainedSampler` first sets every token its grammar forbids to
``-inf`` and then advances the grammar on the token chosen. A row whose grammar is :attr:`complete` (the
JSON value closed) ends at once, so an answer ends exactly at its closing brace; end-of-text is allowed
as soon as the grammar accepts. A row cut by its token limit ends with ``finish = "length"`` and is
never reported as a complete value.

>>> sampler = ConstrainedSampler(Sampler(), grammars.state(schema))  # doctest: +SKIP
>>> token, logprob = sampler.pick(logits)  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from ..errors import ConfigError
from ..grammar import GrammarState
from .sampling import Sampler


class ConstrainedSampler:
    """A :class:`Sampler` whose choices stay inside one row's grammar.

    Args:
        sampler: chooses among the allowed tokens (greedy, or temperature / top-p over them).
        state: the row's :class:`~adapterhub.grammar.GrammarState`.
    """

    def __init__(self, sampler: Sampler, state: GrammarState) -> None:
        self.sampler = sampler
        self.state = state

    @property
    def seed(self) -> int | None:
        return self.sampler.seed

    @property
    def complete(self) -> bool:
        """The grammar is closed: the row's answer is finished (and valid)."""
        return self.state.complete

    def pick(self, logits: Any) -> tuple[int, float]:
        """``(token, log-probability)`` among the tokens the grammar allows; the grammar advances past it."""
        logits = self.state.mask(logits.float().clone())
        token, logprob = self.sampler.pick(logits)
        self.state.accept(token)
        return token, logprob


@dataclass(eq=False)
class Row:
    """One prompt of :func:`generate_rows`: its tokens, adapter pin, sampler, limits, and what it produced."""

    prompt: list[int]
    entry: Any  # Held | None, pinned by the caller
    sampler: Any  # Sampler | ConstrainedSampler
    max_new_tokens: int
    stops: list[str] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    finish: str | None = None  # "eos" | "stop" | "length"


def generate_rows(stepper: Any, rows: Sequence[Row]) -> list[Row]:
    """Run every row to its end (end-of-text, closed grammar, stop string, or token limit) in one running batch.

    Rows are filled in place (``tokens``, ``text``, ``finish``) and returned in the same order. Finished rows
    leave the batch at once; the others keep decoding together, whatever their adapters or grammars.
    """
    batch, logits = stepper.prefill([row.prompt for row in rows], [row.entry for row in rows], rows=list(rows))
    for index, row in enumerate(batch.rows):
        advance(stepper, row, logits[index])
    while batch is not None:
        batch = stepper.keep(batch, [row for row in batch.rows if row.finish is None])
        if batch is None:
            break
        logits = stepper.decode(batch, [row.tokens[-1] for row in batch.rows])
        for index, row in enumerate(batch.rows):
            advance(stepper, row, logits[index])
    return list(rows)


def advance(stepper: Any, row: Row, logits: Any) -> None:
    """Choose ``row``'s next token and settle whether it has finished."""
    token, _ = row.sampler.pick(logits)
    row.tokens.append(token)
    if token in stepper.eos_ids:
        row.finish = "eos"
    elif getattr(row.sampler, "complete", False):
        row.finish = "stop"
    text = stepper.tokenizer.decode(row.tokens, skip_special_tokens=True)
    cut = min((text.find(stop) for stop in row.stops if stop in text), default=-1)
    if cut >= 0:
        text, row.finish = text[:cut], "stop"
    elif row.finish is None and len(row.tokens) >= row.max_new_tokens:
        row.finish = "length"
    row.text = text


SAMPLING_KWARGS = ("do_sample", "temperature", "top_p", "top_k", "seed")
"""The ``generate`` keyword arguments the per-row loop understands (beams and the rest need transformers')."""


def sampler_from_kwargs(kwargs: dict[str, Any], defaults: dict[str, Any]) -> Sampler:
    """A :class:`Sampler` from ``hub.generate``'s keyword arguments, the contract's ``defaults`` where they are silent.

    Raises:
        ConfigError: an argument the per-row loop cannot honour (beams, penalties, ...).
    """
    unknown = sorted(set(kwargs) - set(SAMPLING_KWARGS) - {"pad_token_id"})
    if unknown:
        raise ConfigError(f"generate with a response schema, stop strings or an adapter contract takes only "
                          f"{', '.join(SAMPLING_KWARGS)}; drop {', '.join(unknown)}")
    sample = kwargs.get("do_sample")
    temperature = kwargs.get("temperature", defaults.get("temperature"))
    if sample is False or (sample is None and "temperature" not in kwargs and not defaults.get("temperature")):
        return Sampler()
    return Sampler(temperature=1.0 if temperature is None else temperature,
                   top_p=kwargs.get("top_p", defaults.get("top_p")), top_k=kwargs.get("top_k"), seed=kwargs.get("seed"))
