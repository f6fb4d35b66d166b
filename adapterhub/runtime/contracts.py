"""Applying adapters' serving contracts (:mod:`adapterhub.registry.contract`) to requests.

A request's own value always wins; where it is silent the adapter's contract fills in temperature, top_p,
max_tokens, stop strings and the response schema. A request that contradicts what the adapter is (a response
schema for a label-scoring classifier or an encoder head) is one :class:`~adapterhub.errors.ContractError`.
An adapter served on a base quantisation its contract was never evaluated on logs one warning (per adapter
version and quantisation); with ``strict`` it is refused.

>>> settings = hub.contracts.settings(entry, temperature=None, top_p=None, max_tokens=None, stops=None)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ContractError
from ..registry.contract import Contract, contract_view, record_contract

log = logging.getLogger("adapterhub.contracts")

TEXT = "text"
"""A request's explicit "no schema" (OpenAI ``response_format: {"type": "text"}``): the contract's schema is not used."""


@dataclass
class Settings:
    """What one request runs with after the contract filled in what it left out."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stops: list[str] = field(default_factory=list)
    schema: Any = None  # a JSON schema dict / pydantic model / "json_object", or None: free text
    from_contract: tuple[str, ...] = ()  # the fields the contract supplied


class Contracts:
    """The contracts of one hub's adapters, read once per adapter version (versions are immutable).

    Args:
        hub: the :class:`~adapterhub.runtime.AdapterHub` (its registry and base quantisation).
        strict: refuse adapters never evaluated on this base's quantisation (else: one warning).
    """

    def __init__(self, hub: Any, *, strict: bool = False) -> None:
        self.hub = hub
        self.strict = strict
        self._known: dict[str, Contract | None] = {}
        self._warned: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    @property
    def quantization(self) -> str:
        """This hub's base quantisation as contracts name it (``"none"`` when unquantised)."""
        return getattr(self.hub.base.spec, "quantize", None) or "none"

    def of(self, entry: Any) -> Contract | None:
        """The contract of a pinned adapter (``None``: the bare base, a mix, or an adapter without one).

        Raises:
            ContractError: ``strict`` and the contract names quantisations, but not this base's.
        """
        source = getattr(entry, "source", None)
        if not isinstance(source, str):
            return None
        with self._lock:
            if source not in self._known:
                self._known[source] = self._read(source)
            contract = self._known[source]
        if contract is not None and contract.evaluated_on:
            self._check_quantization(source, contract)
        return contract

    def settings(self, entry: Any, *, temperature: float | None = None, top_p: float | None = None,
                 max_tokens: int | None = None, stops: list[str] | None = None, schema: Any = None) -> Settings:
        """The request's values, the contract's where the request gave ``None``.

        ``schema=TEXT`` asks for free text even when the contract has a schema.

        Raises:
            ContractError: a schema (given or from the contract) for an adapter that does not generate.
        """
        contract = self.of(entry)
        asked = {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens,
                 "stops": stops, "schema": schema}
        defaults = {} if contract is None else {"temperature": contract.temperature, "top_p": contract.top_p,
                                                "max_tokens": contract.max_tokens, "stops": contract.stop or None,
                                                "schema": contract.response_schema}
        chosen = {key: value if value is not None else defaults.get(key) for key, value in asked.items()}
        filled = tuple(key for key, value in asked.items() if value is None and defaults.get(key) is not None)
        if chosen["schema"] == TEXT:
            chosen["schema"] = None
        task = getattr(entry, "task", None)
        if chosen["schema"] is not None and task is not None and task.type != "generation":
            raise ContractError(f"adapter {entry.name!r} is a {task.type} adapter: it scores its labels "
                                f"({', '.join(task.labels[:5])}) and does not generate text, so a response schema "
                                "contradicts it", fix="call hub.predict / hub.label_scores for it, without a schema",
                                http_fix="use /v1/classify for it, or send no response_format")
        return Settings(temperature=chosen["temperature"], top_p=chosen["top_p"], max_tokens=chosen["max_tokens"],
                        stops=list(chosen["stops"] or []), schema=chosen["schema"], from_contract=filled)

    def view(self, source: str) -> dict[str, Any] | None:
        """What ``GET /v1/models`` shows of the contract of ``source`` (a registry reference): template,
        defaults, schema, quantisations evaluated on; ``None`` without one."""
        try:
            return contract_view(self.hub.registry.get(source).manifest)
        except Exception:  # noqa: BLE001 - a folder, an hf:// source or a vanished entry: nothing to show
            return None

    def _read(self, source: str) -> Contract | None:
        path = Path(source)
        if path.is_dir():  # a folder loaded directly: its adapterhub.json, if any
            import json

            manifest = path / "adapterhub.json"
            if not manifest.is_file():
                return None
            try:
                return record_contract(json.loads(manifest.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                return None
        try:
            return self.hub.registry.get(source).contract
        except Exception:  # noqa: BLE001 - an hf:// or vanished source: serve without a contract
            return None

    def _check_quantization(self, source: str, contract: Contract) -> None:
        quantization = self.quantization
        if quantization in contract.evaluated_on:
            return
        evaluated = ", ".join(sorted(contract.evaluated_on))
        message = (f"adapter {source} was evaluated on base quantisation(s) {evaluated}, never on {quantization}; "
                   "its answers here are unmeasured")
        if self.strict:
            raise ContractError(message, fix=f"evaluate it on {quantization} and record the scores "
                                f"(adapterhub evaluate {source} --quantize {quantization} --record), or serve without "
                                "strict", http_fix="this server refuses unevaluated adapters (--strict); ask an admin")
        with self._lock:
            if (source, quantization) in self._warned:
                return
            self._warned.add((source, quantization))
        log.warning(message)
