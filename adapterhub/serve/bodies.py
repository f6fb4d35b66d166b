"""Reading a request's JSON body into its pydantic model, refusing with OpenAI's error shape.

Routes read their body themselves (after auth), so a request without a key never learns
what is wrong with its body.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from pydantic import BaseModel, ValidationError

from .protocol import ServeError

MAX_BODY_BYTES = 8 * 2**20


async def parse_body(request: Request, model: type[BaseModel]) -> Any:
    """``model`` validated from the request's JSON object body.

    Raises:
        ServeError: 413 over :data:`MAX_BODY_BYTES`; 400 malformed JSON, not an object, a field that does not
            validate (the first one named) or a parameter the body's ``unsupported()`` lists.
    """
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > MAX_BODY_BYTES:
        raise ServeError(413, f"request body over {MAX_BODY_BYTES // 2**20} MiB", code="body_too_large")
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ServeError(400, f"malformed JSON body: {error}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ServeError(400, "the JSON body must be an object", code="invalid_json")
    try:
        body = model.model_validate(data)
    except ValidationError as error:
        from .body_problems import describe

        raise ServeError(400, describe(error, model), code="invalid_value", type="invalid_request_error") from None
    problems = body.unsupported() if hasattr(body, "unsupported") else []
    if problems:
        raise ServeError(400, "; ".join(problems), code="unsupported_parameter")
    return body
