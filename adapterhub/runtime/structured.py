"""Structured answers and contracts on :class:`~adapterhub.runtime.AdapterHub`: ``generate(schema=...)``,
``extract`` and the hub's :attr:`~StructuredCalls.contracts` and :attr:`~StructuredCalls.grammars`.

When a call's rows carry a response schema, stop strings, or contract defaults the call left open, ``generate``
runs them here: one running batch over the hub's :class:`~adapterhub.runtime.stepping.Stepper`, each row with
its own adapter, sampler and grammar state (:func:`adapterhub.runtime.constrained.generate_rows`) — the same
per-row loop the server's scheduler runs. Other calls keep transformers' ``generate``.

>>> hub.generate(["Ada, 36"], domain="people", schema=Person)  # doctest: +SKIP
['{"name":"Ada","age":36}']
>>> hub.extract(["Ada, 36"], domain="people", schema=Person)  # doctest: +SKIP
[Person(name='Ada', age=36)]
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from ..errors import ConfigError
from . import constrained, mixing
from .batch import UNSET
from .contracts import Contracts
from ..grammar import Grammars

DEFAULT_MAX_NEW_TOKENS = 64


class StructuredCalls:
    """``extract`` and the contract/grammar state of :class:`~adapterhub.runtime.AdapterHub` (a mixin)."""

    @property
    def contracts(self) -> Contracts:
        """The adapters' serving contracts as this hub applies them (``hub.contracts.strict = True`` refuses
        adapters never evaluated on this base's quantisation)."""
        if "_contracts" not in self.__dict__:
            self.__dict__["_contracts"] = Contracts(self)
        return self.__dict__["_contracts"]

    @property
    def grammars(self) -> Grammars:
        """Compiled response schemas for this hub's tokenizer (cached per schema)."""
        if "_grammars" not in self.__dict__:
            from .._transformers import text_config

            vocab = getattr(text_config(self.base.model.config), "vocab_size", None)
            self.__dict__["_grammars"] = Grammars(self.tokenizer, vocab_size=vocab)
        return self.__dict__["_grammars"]

    def extract(self, texts: str | Sequence[str], *, schema: Any, domain: Any = UNSET,
                domains: Sequence[Any] | None = None, max_new_tokens: int | None = None, **generate_kwargs: Any) -> Any:
        """Answers constrained to ``schema``, parsed: dicts (or ``schema``'s instances when it is a pydantic model).

        Args:
            texts: one text or a list.
            schema: a JSON schema dict, a pydantic model class, or ``"json_object"``.
            domain / domains / max_new_tokens / generate_kwargs: as :meth:`generate`.

        Returns:
            One parsed object for one text, a list for a list.

        Raises:
            ConfigError: a row reached ``max_new_tokens`` before its JSON closed (raise it); SchemaError: as
                :meth:`generate`.

        >>> hub.extract("Revenue rose 4% to $2.1bn", domain="finance", schema=Figures)  # doctest: +SKIP
        Figures(metric='revenue', change_pct=4.0)
        """
        single = isinstance(texts, str)
        rows = self.generate_rows([texts] if single else list(texts), domain=domain, domains=domains, schema=schema,
                                  max_new_tokens=max_new_tokens, generate_kwargs=generate_kwargs)
        parsed = []
        for index, row in enumerate(rows):
            if row.finish == "length":
                raise ConfigError(f"text {index}: the answer reached max_new_tokens={row.max_new_tokens} before its "
                                  "JSON closed; raise max_new_tokens")
            parsed.append(_parsed(row.text, schema))
        return parsed[0] if single else parsed

    def generate_rows(self, prompts: list[str], *, domain: Any = UNSET, domains: Sequence[Any] | None = None,
                      schema: Any = None, stop: Sequence[str] | None = None, max_new_tokens: int | None = None,
                      chat: bool = True, generate_kwargs: dict[str, Any] | None = None,
                      only_if_needed: bool = False) -> Any:
        """Run ``prompts`` through the per-row loop and return its :class:`~adapterhub.runtime.constrained.Row` s.

        With ``only_if_needed``, returns ``None`` (touching nothing) when no row has a schema, stop strings
        or a contract default to apply: the caller then uses transformers' ``generate``.
        """
        kwargs = dict(generate_kwargs or {})
        names = self.resolve_auto_rows(mixing.call_rows(len(prompts), domain, domains, default=self.domain), prompts)
        stepper = self.stepper()
        with self.residency.pinned(names) as entries:
            settings = [self.contracts.settings(entry, max_tokens=max_new_tokens, stops=_stops(stop),
                                                temperature=kwargs.get("temperature"), top_p=kwargs.get("top_p"),
                                                schema=schema) for entry in entries]
            if only_if_needed and not any(s.schema is not None or s.stops or s.from_contract for s in settings):
                return None
            rows = []
            for text, entry, chosen in zip(prompts, entries, settings):
                sampler = constrained.sampler_from_kwargs(kwargs, {"temperature": chosen.temperature,
                                                                   "top_p": chosen.top_p})
                if chosen.schema is not None:
                    sampler = constrained.ConstrainedSampler(sampler, self.grammars.state(chosen.schema))
                limit = chosen.max_tokens or DEFAULT_MAX_NEW_TOKENS
                prompt = stepper.encode(text, entry, chat=chat)
                needed = len(prompt) + stepper.prefix_tokens(entry) + limit
                if needed > stepper.context_length:
                    raise ConfigError(f"a prompt ({len(prompt)} tokens) + max_new_tokens={limit} needs {needed} "
                                      f"positions but the base's context is {stepper.context_length} tokens; shorten "
                                      "the input or ask for fewer new tokens")
                rows.append(constrained.Row(prompt=prompt, entry=entry, sampler=sampler, max_new_tokens=limit,
                                            stops=chosen.stops))
            return constrained.generate_rows(stepper, rows) if rows else []


def _stops(stop: Sequence[str] | str | None) -> list[str] | None:
    if stop is None:
        return None
    stops = [stop] if isinstance(stop, str) else list(stop)
    if any(not isinstance(s, str) or not s for s in stops):
        raise ConfigError(f"stop must be non-empty strings, got {stops!r}")
    return stops


def _parsed(text: str, schema: Any) -> Any:
    if isinstance(schema, type) and hasattr(schema, "model_validate_json"):
        return schema.model_validate_json(text)
    return json.loads(text)
