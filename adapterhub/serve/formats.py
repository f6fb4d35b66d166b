"""Reading a request's ``response_format`` (OpenAI chat and completions, LoRAX ``parameters``) into the schema
the engine constrains the answer to.

OpenAI: ``{"type": "text"}``, ``{"type": "json_object"}`` or ``{"type": "json_schema", "json_schema": {"name": ...,
"schema": {...}, "strict": true}}`` (what ``client.beta.chat.completions.parse(response_format=Model)`` sends).
LoRAX: ``{"type": "json_object", "schema": {...}}`` (no ``schema``: any JSON object).

>>> response_schema({"type": "json_object"})
'json_object'
>>> response_schema(None) is None
True
"""

from __future__ import annotations

from typing import Any

from ..runtime.contracts import TEXT
from .protocol import ServeError


def response_schema(response_format: dict[str, Any] | None) -> Any:
    """The schema a ``response_format`` asks for: ``None`` (not given: the adapter's contract decides), ``TEXT``
    (free text), ``"json_object"`` or a JSON schema dict.

    Raises:
        ServeError: 400 for an unknown ``type`` or a ``json_schema`` without a ``schema`` object.
    """
    if response_format is None:
        return None
    kind = response_format.get("type")
    if kind == "text":
        return TEXT
    if kind == "json_object":
        schema = response_format.get("schema")  # LoRAX's form may carry one
        return "json_object" if schema is None else _object(schema, "response_format.schema")
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict):
            raise ServeError(400, "response_format.json_schema must be an object with a 'schema'",
                             code="invalid_value")
        return _object(spec.get("schema", {"type": "object"}), "response_format.json_schema.schema")
    raise ServeError(400, f"response_format.type {kind!r} is not supported; use text, json_object or json_schema",
                     code="invalid_value")


def _object(schema: Any, where: str) -> dict[str, Any]:
    if not isinstance(schema, dict):
        raise ServeError(400, f"{where} must be a JSON schema object, not {type(schema).__name__}",
                         code="invalid_value")
    return schema
