"""One readable line for a request body that does not validate: every problem, and the field meant.

>>> from pydantic import BaseModel, ConfigDict
>>> class Body(BaseModel):
...     model_config = ConfigDict(extra="forbid")
...     model: str
...     input: str
>>> try:
...     Body.model_validate({"model": "support", "inputs": "hi"})
... except Exception as error:
...     print(describe(error, Body))
inputs: unknown field (did you mean 'input'?); input: field required
"""

from __future__ import annotations

import difflib
from typing import Any

MAX_SHOWN = 5


def describe(error: Any, model: type) -> str:
    """Every problem of a pydantic ``ValidationError`` (up to :data:`MAX_SHOWN`), unknown fields first."""
    known = list(getattr(model, "model_fields", {}))
    items = sorted(error.errors(), key=lambda item: item["type"] != "extra_forbidden")
    lines = []
    for item in items[:MAX_SHOWN]:
        where = ".".join(str(part) for part in item["loc"]) or "body"
        if item["type"] == "extra_forbidden":
            guess = difflib.get_close_matches(str(item["loc"][-1]), known, n=1) if len(item["loc"]) == 1 else []
            lines.append(f"{where}: unknown field" + (f" (did you mean {guess[0]!r}?)" if guess else ""))
        elif item["type"] == "missing":
            lines.append(f"{where}: field required")
        else:
            lines.append(f"{where}: {item['msg']}")
    more = len(items) - MAX_SHOWN
    return "; ".join(lines) + (f"; and {more} more problem(s)" if more > 0 else "")
