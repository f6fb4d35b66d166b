"""Two small JSON schemas the structured-output tests constrain rows with (runtime and server alike)."""

from __future__ import annotations

PICK = {"type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99},
                                         "b": {"enum": ["x", "y"]}},
        "required": ["a", "b"], "additionalProperties": False}
FLAG = {"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"enum": [1, 2, 3]}},
        "required": ["ok", "n"], "additionalProperties": False}
