"""Channel moves over HTTP (admin keys only): ``POST /v1/adapters/{name}/promote``, ``/rollback`` and
``GET /v1/adapters/{name}/history``.

A promotion evaluates through this server's own hub (the base it serves) on the server's files, so the
gate judges exactly what will be served. The history records the API key's name as ``who`` (the server's
OS user when auth is off). After a move the server re-reads the channel at once; other servers following
the same registry see it within their poll interval.

>>> httpx.post(f"{url}/v1/adapters/finance/promote", json={"version": 4, "channel": "prod",
...            "gate": "accuracy >= prod - 0.5"}, headers=admin)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from ..lifecycle import ServingEvaluator
from ..registry.channels import default_who
from .access import note
from .bodies import parse_body
from .protocol import ServeError


class PromoteRequest(BaseModel):
    """``POST /v1/adapters/{name}/promote``: ``version`` (or ``finish`` to end the running canary)."""

    model_config = ConfigDict(extra="forbid")
    channel: str = Field(min_length=1, max_length=100)
    version: int | None = Field(None, ge=1)
    gate: str | None = Field(None, max_length=500)
    data: str | None = Field(None, max_length=4096)  # a file on the server; default: the recipe's test file
    canary: str | float | None = None
    finish: bool = False


class RollbackRequest(BaseModel):
    """``POST /v1/adapters/{name}/rollback``."""

    model_config = ConfigDict(extra="forbid")
    channel: str = Field(min_length=1, max_length=100)


def add_routes(app: FastAPI, serving: Any) -> None:
    """The three routes, on ``serving.engine``'s hub and registry, behind ``serving.gate``'s admin check."""
    engine, gate = serving.engine, serving.gate

    def who(key: Any) -> str:
        return key.name if key is not None else default_who()

    @app.post("/v1/adapters/{name}/promote")
    async def promote(name: str, request: Request) -> dict[str, Any]:
        key = await gate.authenticate(request, admin=True)
        body = await parse_body(request, PromoteRequest)
        note(request, model=name[:200])
        registry = engine.hub.registry
        if body.finish:
            result = await run_in_threadpool(registry.finish_canary, name, channel=body.channel, who=who(key))
        else:
            if body.version is None:
                raise ServeError(400, "send the version to promote (or finish: true to end the canary)",
                                 code="invalid_value")
            result = await run_in_threadpool(
                lambda: registry.promote(f"{name}@{body.version}", channel=body.channel, gate=body.gate,
                                         data=body.data, canary=body.canary, who=who(key),
                                         evaluate=ServingEvaluator(engine.hub) if body.gate else None))
        await run_in_threadpool(engine.rollout.refresh)
        return {"object": "channel.move", **result.row.to_dict()}

    @app.post("/v1/adapters/{name}/rollback")
    async def rollback(name: str, request: Request) -> dict[str, Any]:
        key = await gate.authenticate(request, admin=True)
        body = await parse_body(request, RollbackRequest)
        note(request, model=name[:200])
        result = await run_in_threadpool(engine.hub.registry.rollback, name, channel=body.channel, who=who(key))
        await run_in_threadpool(engine.rollout.refresh)
        return {"object": "channel.move", **result.row.to_dict()}

    @app.get("/v1/adapters/{name}/history")
    async def history(name: str, request: Request) -> dict[str, Any]:
        await gate.authenticate(request, admin=True)
        note(request, model=name[:200])
        rows = await run_in_threadpool(engine.hub.registry.history, name)
        return {"object": "list", "data": [row.to_dict() for row in rows]}
