"""Reading a request's JSON body into its pydantic model, refusing with OpenAI's error shape.

Routes read their body themselves (after auth), so a request without a key never learns
what is wrong with its body. Only ``application/json`` is read (a browser's form or ``text/plain``
POST, sent without a preflight, is refused); bytes are counted as they stream in, chunked or not;
a large body is parsed in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from .protocol import ServeError

MAX_BODY_BYTES = 8 * 2**20
BODY_TIMEOUT_S = 60.0  # the whole body must arrive within this
LARGE_BODY_BYTES = 2**20  # a refused body over this hands its freed memory back (unwind.return_freed_memory)
_INLINE_BYTES = 64 * 2**10  # smaller bodies are parsed on the loop (cheaper than a thread hop)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # only a \uD800-\uDFFF escape can make a lone surrogate


async def parse_body(request: Request, model: type[BaseModel]) -> Any:
    """``model`` validated from the request's JSON object body.

    Raises:
        ServeError: 413 over :data:`MAX_BODY_BYTES`; 400 malformed JSON, not an object, a field that does not
            validate (the first one named) or a parameter the body's ``unsupported()`` lists.
    """
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise ServeError(415, f"send the body as JSON with 'Content-Type: application/json' (got {media[:60]!r})",
                         code="unsupported_media_type")
    raw = await read_body(request)
    data = _decode(raw) if len(raw) <= _INLINE_BYTES else await run_in_threadpool(_decode, raw)
    if not isinstance(data, dict):
        raise ServeError(400, "the JSON body must be an object", code="invalid_json")
    try:
        body = model.model_validate(data) if len(raw) <= _INLINE_BYTES else \
            await run_in_threadpool(model.model_validate, data)
    except ValidationError as error:
        from .body_problems import describe

        raise ServeError(400, describe(error, model), code="invalid_value", type="invalid_request_error") from None
    problems = body.unsupported() if hasattr(body, "unsupported") else []
    if problems:
        raise ServeError(400, "; ".join(problems), code="unsupported_parameter")
    return body


async def read_body(request: Request, *, limit: int = MAX_BODY_BYTES) -> bytearray:
    """The body's bytes, counted as they arrive (``Content-Length`` or chunked) into one buffer (each chunk is
    freed as soon as it is copied, so a large body is held once, not twice).

    Raises:
        ServeError: 413 past ``limit`` bytes (reading stops there), 408 when the body takes over
            :data:`BODY_TIMEOUT_S` to arrive.
    """
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > limit:
        raise _too_large(limit)
    buffer = bytearray()

    async def gather() -> None:
        async for chunk in request.stream():
            if len(buffer) + len(chunk) > LARGE_BODY_BYTES:
                request.scope.setdefault("state", {})["large_body"] = True
            if len(buffer) + len(chunk) > limit:
                raise _too_large(limit)
            buffer.extend(chunk)

    try:
        await asyncio.wait_for(gather(), BODY_TIMEOUT_S)
    except asyncio.TimeoutError:
        buffer.clear()
        raise ServeError(408, f"the request body did not arrive within {BODY_TIMEOUT_S:g} s",
                         code="body_timeout") from None
    except BaseException:
        buffer.clear()  # a refused body's bytes are freed now, not when the task's reference cycle is collected
        raise
    return buffer


def _decode(raw: bytes | bytearray) -> Any:
    """JSON from ``raw``: 400 for malformed JSON, nesting too deep to parse, or text that is not valid Unicode
    (a lone surrogate such as ``"\\ud800"``)."""
    try:
        data = json.loads(raw)
        if _SURROGATE_ESCAPE.search(raw):  # (a pair is fine; a lone one cannot be encoded)
            json.dumps(data, ensure_ascii=False).encode("utf-8")
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ServeError(400, f"malformed JSON body: {error}", code="invalid_json") from None
    except RecursionError:
        raise ServeError(400, "the JSON body is nested too deeply; send a flat object", code="invalid_json") from None
    except UnicodeEncodeError:
        raise ServeError(400, "the JSON body holds a lone surrogate (such as \\ud800), which is not text; "
                         "send valid Unicode", code="invalid_json") from None
    return data


def _too_large(limit: int) -> ServeError:
    return ServeError(413, f"request body over {limit // 2**20} MiB", code="body_too_large")
