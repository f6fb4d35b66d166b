"""Running one prepared generation for a route: the whole answer collected (freeing its row when the
client goes away), or server-sent events streamed as the scheduler emits tokens.

>>> done = await collect(engine, request, prepared)  # doctest: +SKIP
>>> return await stream(engine, prepared, render)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, Callable

from fastapi import Request
from fastapi.responses import StreamingResponse

from . import responses as shape
from .access import note
from .engine import Engine, Prepared
from .protocol import ServeError

Render = Callable[[AsyncIterator[dict[str, Any]]], AsyncIterator[str]]
"""Turns the scheduler's events (``token`` ..., then ``done``) into SSE chunks of one protocol."""


def finish(engine: Engine, request: Request, prepared: Prepared, done: dict[str, Any]) -> None:
    """Count a finished generation's tokens and note them for the access log."""
    engine.metrics.tokens(prepared.label, prompt=len(prepared.prompt), generated=done["tokens"])
    note(request, completion_tokens=done["tokens"], text_out=done["text"])


async def collect(engine: Engine, request: Request, prepared: Prepared) -> dict[str, Any]:
    """The ``done`` event with ``token_events``; a client that disconnects meanwhile frees its row (or its
    queue place) and gets a 499."""
    done: dict[str, Any] = {}
    tokens: list[dict[str, Any]] = []
    started = time.perf_counter()
    job, events = engine.submit(prepared)

    async def consume() -> None:
        async for event in events:
            if event["type"] == "token":
                if not tokens:
                    engine.metrics.first_token(prepared.label, time.perf_counter() - started)
                tokens.append(event)
            else:
                done.update(event)

    task = asyncio.ensure_future(consume())
    watcher = asyncio.ensure_future(_watch_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await events.aclose()
        job.cancel()
    if not task.cancelled() and task.exception() is not None:
        raise task.exception()
    if not done:
        raise ServeError(499, "client disconnected", code="client_closed")
    done["token_events"] = tokens
    finish(engine, request, prepared, done)
    return done


async def stream(engine: Engine, prepared: Prepared, render: Render) -> StreamingResponse:
    """Server-sent events; the first event is awaited here so early errors still answer with a status."""
    started = time.perf_counter()
    job, events = engine.submit(prepared)
    try:
        first = await events.__anext__()
    except BaseException:
        job.cancel()
        raise
    engine.metrics.first_token(prepared.label, time.perf_counter() - started)

    async def chained() -> AsyncIterator[dict[str, Any]]:
        yield first
        async for event in events:
            yield event

    async def body() -> AsyncIterator[str]:
        try:
            async for chunk in render(chained()):
                yield chunk
        except ServeError as error:
            error.message = engine.redact(error.message)  # a row's error mid-stream shows no server paths either
            yield shape.sse(error.body())
        finally:
            job.cancel()
            await events.aclose()

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _watch_disconnect(request: Request) -> None:
    while not await request.is_disconnected():
        await asyncio.sleep(0.2)
