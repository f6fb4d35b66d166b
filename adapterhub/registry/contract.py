"""An adapter's serving contract: how it must be served, recorded in its manifest (``"contract"``).

A contract holds the default sampling (``temperature``, ``top_p``, ``max_tokens``), ``stop`` strings, a
default response ``schema`` (JSON schema) and ``evaluated_on``: the base quantisations the adapter was
scored on, with the scores (``"none"`` is the unquantised base). The prompt and chat template are the
entry's task (``prompt_template``, ``system_prompt``, ``chat``); :func:`contract_view` shows them with it.

A recipe's ``serve:`` section is a :class:`ServeDefaults`; training records it, with the test scores under the
recipe's quantisation, as the new version's contract. ``adapterhub registry set-contract REF`` (or
:func:`set_contract`) records a contract for an adapter already stored (pulled ones too) as a **new
version** with the same verified files: versions stay immutable, the integrity checks see an ordinary
entry, and a channel such as ``prod`` moves to it only through a promotion. A manifest without the key
has no contract (every registry written before contracts existed).

>>> Contract.model_validate({"temperature": 0, "schema": {"type": "object"}}).to_manifest()
{'temperature': 0.0, 'schema': {'type': 'object'}}
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import ContractError, SchemaError

QUANTIZATION_NAMES = ("none", "nf4", "fp4", "int8")
"""Keys of ``evaluated_on``: ``none`` is the unquantised base."""


class ServeDefaults(BaseModel):
    """A recipe's ``serve:`` section: what requests that say nothing get from this adapter."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    temperature: float | None = Field(None, ge=0, le=2, description="default temperature (0 = greedy)")
    top_p: float | None = Field(None, gt=0, le=1, description="default nucleus sampling mass")
    max_tokens: int | None = Field(None, ge=1, description="default new tokens per answer")
    stop: list[str] = Field(default_factory=list, description="stop strings (at most 4, non-empty)")
    response_schema: dict[str, Any] | None = Field(
        None, alias="schema", description="default response JSON schema: answers are constrained to it")

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: list[str]) -> list[str]:
        if len(value) > 4 or any(not stop for stop in value):
            raise ValueError("stop takes up to 4 non-empty strings")
        return value

    @field_validator("response_schema")
    @classmethod
    def _schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            check_schema(value)
        return value

    def to_manifest(self) -> dict[str, Any]:
        """The fields that are set, as the manifest stores them (``schema`` under its own name)."""
        return self.model_dump(by_alias=True, exclude_defaults=True, mode="json")

    @property
    def empty(self) -> bool:
        return not self.to_manifest()


class Contract(ServeDefaults):
    """A stored contract: the serving defaults and the quantisations evaluated on."""

    def to_manifest_all(self) -> dict[str, Any]:
        """Every set field, ``evaluated_on`` included, as the manifest stores it."""
        return self.model_dump(by_alias=True, exclude_defaults=True, mode="json")

    evaluated_on: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="base quantisation (none, nf4, fp4, int8) -> its evaluation scores")

    @field_validator("evaluated_on")
    @classmethod
    def _quantisations(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        unknown = sorted(set(value) - set(QUANTIZATION_NAMES))
        if unknown:
            raise ValueError(f"unknown quantisation(s) {unknown}; use {', '.join(QUANTIZATION_NAMES)}")
        for scores in value.values():
            if not all(isinstance(v, (int, float, str)) or v is None for v in scores.values()):
                raise ValueError("scores are numbers or strings")
        return value


def check_schema(schema: Any) -> None:
    """Refuse a schema that is no JSON object, too large or deep, or that llguidance cannot compile.

    Raises:
        ContractError: naming the problem (an unsupported feature by its keyword).
    """
    from ..grammar import check

    if not isinstance(schema, Mapping):
        raise ContractError(f"schema must be a JSON schema object, not {type(schema).__name__}")
    try:
        check(dict(schema))
    except SchemaError as error:
        raise ContractError(f"schema: {error}") from None


def parse_contract(value: Any, *, where: str) -> Contract:
    """A :class:`Contract` from a manifest's ``contract`` object.

    Raises:
        ContractError: a field of the wrong type or value (named, with ``where``).
    """
    if not isinstance(value, Mapping):
        raise ContractError(f"{where}: contract must be an object, not {type(value).__name__}")
    try:
        return Contract.model_validate(dict(value))
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "contract"
        raise ContractError(f"{where}: contract field {field!r}: {first['msg']}") from None


def record_contract(manifest: Mapping[str, Any]) -> Contract | None:
    """The contract an entry's manifest records (``None``: none, as in every pre-contract registry)."""
    value = manifest.get("contract")
    return None if value is None else parse_contract(value, where=str(manifest.get("name", "manifest")))


def contract_schema(manifest: Mapping[str, Any]) -> dict[str, Any] | None:
    """The default response schema an entry's contract records (``None``: no contract or no schema)."""
    contract = record_contract(manifest)
    return None if contract is None else contract.response_schema


def trained_contract(serve: ServeDefaults | None, metrics: Mapping[str, Any], quantize: str | None) -> dict | None:
    """The contract training records: the recipe's ``serve:`` section and the held-out scores under the base's
    quantisation (``test``, else ``validation``), numbers only."""
    contract = serve.to_manifest() if serve is not None else {}
    numbers = numeric_scores(metrics.get("test") or metrics.get("validation") or {})
    if numbers:
        contract["evaluated_on"] = {quantize or "none": numbers}
    return contract or None


def numeric_scores(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numbers among an evaluation's metrics (what ``evaluated_on`` keeps of them)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def record_evaluation(registry: Any, ref: str, metrics: Mapping[str, Any], quantize: str | None) -> Any:
    """Record ``metrics`` (an evaluation of ``ref`` on a base quantised as ``quantize``, ``None``: not) in the
    contract's ``evaluated_on``, as a new version (:func:`set_contract`); serving on that quantisation then
    no longer warns. Returns the new record.

    >>> record_evaluation(Registry(), "finance@2", {"accuracy": 0.95}, "nf4").ref  # doctest: +SKIP
    'finance@3'
    """
    numbers = numeric_scores(metrics)
    if not numbers:
        raise ContractError(f"no scores to record for {ref}")
    return set_contract(registry, ref, {"evaluated_on": {quantize or "none": numbers}})


def contract_view(manifest: Mapping[str, Any]) -> dict[str, Any] | None:
    """What ``registry show``, the model card and ``GET /v1/models`` show: the contract and the task's template."""
    contract = record_contract(manifest)
    if contract is None:
        return None
    task = manifest.get("task") or {}
    template = {key: task.get(key) for key in ("prompt_template", "system_prompt", "chat") if key in task}
    return {"template": template, **contract.to_manifest_all()}


def set_contract(registry: Any, ref: str, changes: Mapping[str, Any], *, template: Mapping[str, Any] | None = None,
                 replace: bool = False) -> Any:
    """Record a contract for ``ref`` as a new version of the same name (same verified files).

    Args:
        registry: the :class:`~adapterhub.registry.Registry`.
        ref: the entry (any reference) whose files and fields the new version copies.
        changes: contract fields (``temperature``, ``top_p``, ``max_tokens``, ``stop``, ``schema``,
            ``evaluated_on``) merged over the current contract (``None`` removes a field).
        template: ``prompt_template`` / ``system_prompt`` / ``chat`` for the new version's task.
        replace: start from an empty contract instead of the current one.

    Returns:
        The new :class:`~adapterhub.registry.AdapterRecord` (no tag moves to it).

    Raises:
        ContractError: an invalid field; AdapterNotFoundError / IntegrityError: as ``registry.export``.

    >>> set_contract(Registry(), "legal@1", {"temperature": 0, "stop": ["\\n\\n"]}).ref  # doctest: +SKIP
    'legal@2'
    """
    record = registry.get(ref)
    current = {} if replace else dict(record.manifest.get("contract") or {})
    for key, value in changes.items():
        if value is None:
            current.pop(key, None)
        elif key == "evaluated_on":
            current["evaluated_on"] = {**current.get("evaluated_on", {}), **value}
        else:
            current[key] = value
    contract = parse_contract(current, where=record.ref).to_manifest_all()
    task = {**(record.manifest.get("task") or {}), **{k: v for k, v in (template or {}).items() if v is not None}}
    source = {**(record.manifest.get("source") or {"kind": "imported"}), "contract_of": record.ref}
    with tempfile.TemporaryDirectory(prefix="adapterhub-contract-") as folder:
        exported = registry.export(record.ref, f"{folder}/entry")
        return registry.add(exported, record.name, domain=record.domain, task=task, description=record.description,
                            metrics=record.manifest.get("metrics"), recipe=record.manifest.get("recipe"),
                            source=source, contract=contract)
