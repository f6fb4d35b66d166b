"""The FastAPI application: OpenAI, LoRAX/TGI, adapter admin, health and metrics routes.

Every route reads its body itself (so auth answers before body checks, :mod:`.gate` then
:mod:`.bodies`), every failure leaves as OpenAI's error JSON, and :mod:`.access` logs and counts
each request once it has sent its last byte. Generations run through :mod:`.streaming` and are
shaped by :mod:`.rendering`.

>>> app = build_app(hub, ServeOptions(auth=True))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import promotions, rendering, routing
from . import responses as shape
from .access import AccessLog, note
from .auth import ApiKey, KeyStore
from .bodies import parse_body
from .console import add_console_routes
from .engine import Engine, Prepared, ServeOptions
from .formats import response_schema
from .gate import Gate
from .hosts import HostCheck
from .limits import Lane, check_inputs
from .protocol import (ChatRequest, ClassifyRequest, CompletionRequest, GenerateRequest, LoadAdapterRequest,
                       ServeError, UnloadAdapterRequest, from_exception)
from .streaming import collect, finish, stream
from .unwind import drop_locals, return_freed_memory

log = logging.getLogger("adapterhub.serve")


def error_response(error: ServeError, extra: dict[str, Any] | None = None) -> JSONResponse:
    return JSONResponse(error.body() | (extra or {}), status_code=error.status, headers=error.headers)


class _Route(APIRoute):
    """Turns any exception a handler raises into one OpenAI-shaped answer (never a traceback)."""

    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()
        tgi = self.path in ("/", "/generate", "/generate_stream")

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:  # noqa: BLE001
                error = from_exception(exc)
                if error.code == "internal_error":
                    log.exception("unexpected error on %s", request.url.path)
                drop_locals(exc)  # a refused 6 MiB prompt is freed now, not at the next full gc
                if request.scope.get("state", {}).get("large_body"):
                    await run_in_threadpool(return_freed_memory)
                error.message = request.app.state.engine.redact(error.message)  # no server paths in answers
                # LoRAX's client reads error_type; OpenAI's reads error.message/type/code
                extra = {"error_type": "validation" if error.status == 400 else "generation"} if tgi else None
                return error_response(error, extra)

        return guarded


def build_app(hub: Any, options: ServeOptions | None = None, *, engine: Engine | None = None) -> FastAPI:
    """The app serving ``hub`` (an :class:`adapterhub.AdapterHub`); the scheduler runs while the app is up."""
    engine = engine or Engine(hub, options)
    serving = _Serving(engine, Gate(engine, KeyStore(engine.options.keys_path) if engine.options.auth else None),
                       Lane(waiting=engine.options.max_queue))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        try:
            yield
        finally:
            engine.draining = True
            await run_in_threadpool(engine.stop)

    app = FastAPI(title="adapterhub", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.router.route_class = _Route
    app.router.redirect_slashes = False  # a 307's Location would echo the request's Host
    app.state.engine = engine
    app.add_middleware(AccessLog, metrics=engine.metrics, log_text=engine.options.log_text)
    app.add_middleware(HostCheck, bound=engine.options.host, allowed=engine.options.allowed_hosts)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        message = f"no route {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
        return error_response(ServeError(exc.status_code, message, code=code))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(ServeError(400, str(exc), code="invalid_request"))

    for add_routes in (_openai_routes, _labelling_routes, _tgi_routes, _admin_routes, _operation_routes,
                       promotions.add_routes, add_console_routes):
        add_routes(app, serving)
    return app


@dataclass(frozen=True)
class _Serving:
    """What every route needs: the engine and the gate."""

    engine: Engine
    gate: Gate
    labelling: Lane  # /v1/classify and /v1/tag run one at a time, outside the event loop

    async def prepare(self, request: Request, key: ApiKey | None, model: str, **kwargs: Any) -> Prepared:
        """A generation of ``model`` ready to submit, once the key may use it and the adapter is resident
        (tokenising runs in a worker thread: a long prompt never holds the event loop)."""
        if routing.is_auto(model):  # the router picks (serve/routing.py); the key's allow list bounds its choice
            note(request, model=model[:200])
            text = routing.routed_text(kwargs.get("text"), kwargs.get("messages"))
            ref, decision = await routing.choose(self.engine, key, model, text)
            note(request, served_by=decision.label)
        else:
            ref = self.gate.permit(request, key, model)
        entry = await self.engine.acquire_async(ref)
        note(request, adapter=routing.metrics_label(ref) if routing.is_auto(model)  # a metrics label only once
             else "base" if ref is None else ref)  # it resolved
        prepared = await run_in_threadpool(self.engine.prepare, ref, entry, **kwargs)
        note(request, prompt_tokens=len(prepared.prompt), text_in=kwargs.get("text") or kwargs.get("messages"))
        return prepared

    def on_done(self, request: Request, prepared: Prepared) -> Callable[[dict[str, Any]], None]:
        return lambda done: finish(self.engine, request, prepared, done)


def _openai_routes(app: FastAPI, serving: _Serving) -> None:
    engine = serving.engine

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        key = await serving.gate.authenticate(request)
        listed = await run_in_threadpool(engine.models)
        if key is not None:
            listed = [m for m in listed if m["id"] == engine.base_id or key.may_use(m["id"])]
        return {"object": "list", "data": listed}

    async def openai_generate(request: Request, chat: bool) -> Response:
        key = await serving.gate.authenticate(request)
        body = await parse_body(request, ChatRequest if chat else CompletionRequest)
        max_tokens = (body.max_completion_tokens or body.max_tokens) if chat else body.max_tokens
        inputs = {"messages": [m.plain() for m in body.messages]} if chat else {"text": body.text(), "chat": False}
        prepared = await serving.prepare(request, key, body.model, max_tokens=max_tokens, temperature=body.temperature,
                                         top_p=body.top_p, seed=body.seed, stops=body.stops(),
                                         schema=response_schema(body.response_format), **inputs)
        rid = shape.new_id("chatcmpl" if chat else "cmpl")
        model = routing.served_model(request, body.model)
        if not body.stream:
            done = await collect(engine, request, prepared)
            return JSONResponse(rendering.openai_answer(chat, rid, model, len(prepared.prompt), done))
        render = rendering.openai_events(chat, rid, model, len(prepared.prompt),
                                         include_usage=bool((body.stream_options or {}).get("include_usage")),
                                         on_done=serving.on_done(request, prepared))
        return await stream(engine, prepared, render)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await openai_generate(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await openai_generate(request, chat=True)


_LABELLING = {  # route -> (Engine method, what the access log shows of one text's answer, its row in "data")
    "/v1/classify": ("classify", lambda row: row["label"], rendering.class_row),
    "/v1/tag": ("tag", lambda entities: [entity["text"] for entity in entities], rendering.tag_row),
}


def _labelling_routes(app: FastAPI, serving: _Serving) -> None:
    """``/v1/classify`` and ``/v1/tag``: texts in, one labelled row per text out (one handler, two methods)."""
    for path, (method, logged, row) in _LABELLING.items():
        app.post(path, name=method)(_labelling(serving, method, logged, row))


def _labelling(serving: _Serving, method: str, logged: Callable[[Any], Any],
               row: Callable[[int, Any], dict[str, Any]]) -> Callable[[Request], Any]:
    async def handler(request: Request) -> dict[str, Any]:
        key = await serving.gate.authenticate(request)
        body = await parse_body(request, ClassifyRequest)
        texts = body.texts()
        check_inputs(texts, most=serving.engine.options.max_inputs)
        async with serving.labelling:
            if routing.is_auto(body.model):  # each text goes to the adapter the router picks for it
                note(request, model=body.model[:200])
                answers, ref = await run_in_threadpool(routing.label_auto, serving.engine, key, body.model, texts,
                                                       method)
            else:
                ref = serving.gate.permit(request, key, body.model)
                answers = await run_in_threadpool(getattr(serving.engine, method), ref, texts)
        note(request, adapter=ref)
        note(request, text_in=texts, text_out=[logged(answer) for answer in answers])
        return {"id": shape.new_id(method), "object": "list", "created": int(time.time()), "model": body.model,
                "data": [row(index, answer) for index, answer in enumerate(answers)]}

    return handler


def _tgi_routes(app: FastAPI, serving: _Serving) -> None:
    """LoRAX / TGI: ``/generate``, ``/generate_stream`` and ``/`` (streams when the body says so)."""
    engine = serving.engine

    async def tgi(request: Request, force_stream: bool | None) -> Response:
        key = await serving.gate.authenticate(request)
        body = await parse_body(request, GenerateRequest)
        p = body.parameters
        if p.adapter_source == "local":
            raise ServeError(400, "adapter_source='local' is not served per request; an admin loads folders "
                             "with /v1/load_lora_adapter, then requests name them", code="unsupported_parameter")
        sampled = p.sampling()
        prepared = await serving.prepare(request, key, p.adapter_id or engine.base_id, text=body.inputs, chat=False,
                                         max_tokens=p.max_new_tokens, default_max_tokens=20,
                                         temperature=(p.temperature or 1.0) if sampled else None,
                                         top_p=p.top_p if sampled else None, top_k=p.top_k if sampled else None,
                                         seed=p.seed, stops=list(p.stop), stop_at_eos=not p.ignore_eos_token,
                                         schema=response_schema(p.response_format), default_temperature=0.0)
        seed = prepared.sampler.seed
        prefix = body.inputs if p.return_full_text else ""
        if not (body.stream if force_stream is None else force_stream):
            done = await collect(engine, request, prepared)
            answer = rendering.tgi_answer(done, prefix=prefix, prompt_tokens=len(prepared.prompt), seed=seed,
                                          details=p.details, decode=engine.stepper.tokenizer.decode)
            if "details" in answer and routing.is_auto(p.adapter_id or ""):
                answer["details"]["adapter_id"] = routing.served_model(request, p.adapter_id)
            return JSONResponse([answer] if request.url.path == "/" else answer)
        render = rendering.tgi_events(prefix=prefix, prompt_tokens=len(prepared.prompt), seed=seed,
                                      on_done=serving.on_done(request, prepared))
        return await stream(engine, prepared, render)

    @app.post("/generate")
    async def generate(request: Request) -> Response:
        return await tgi(request, False)

    @app.post("/generate_stream")
    async def generate_stream(request: Request) -> Response:
        return await tgi(request, True)

    @app.post("/")
    async def compat(request: Request) -> Response:
        return await tgi(request, None)


def _admin_routes(app: FastAPI, serving: _Serving) -> None:
    """Adapters loaded and unloaded at run time (admin keys only)."""
    engine = serving.engine

    @app.post("/v1/load_lora_adapter")
    async def load_adapter(request: Request) -> dict[str, Any]:
        key = await serving.gate.authenticate(request, admin=True)
        body = await parse_body(request, LoadAdapterRequest)
        note(request, model=body.lora_name[:200])
        loaded = await run_in_threadpool(lambda: engine.load(body.lora_name, body.lora_path, detailed=key is not None))
        note(request, adapter=body.lora_name)
        return {"object": "adapter", **loaded}

    @app.get("/v1/adapters")
    async def adapters(request: Request) -> dict[str, Any]:
        await serving.gate.authenticate(request, admin=True)
        return await run_in_threadpool(engine.adapters)

    @app.post("/v1/unload_lora_adapter")
    async def unload_adapter(request: Request) -> dict[str, Any]:
        await serving.gate.authenticate(request, admin=True)
        body = await parse_body(request, UnloadAdapterRequest)
        note(request, model=body.lora_name[:200])
        if not await run_in_threadpool(engine.unload, body.lora_name):
            raise ServeError(404, f"adapter {body.lora_name!r} is not loaded", code="model_not_found")
        note(request, adapter=body.lora_name)
        return {"object": "adapter", "lora_name": body.lora_name, "unloaded": True}


def _operation_routes(app: FastAPI, serving: _Serving) -> None:
    """Health, readiness (503 while draining) and Prometheus metrics."""
    engine = serving.engine

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        if engine.draining:
            return error_response(ServeError(503, "draining: finishing in-flight requests", code="draining"))
        if engine.options.auth:  # unauthenticated: say only whether it is ready, never which adapters it holds
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "ready", "base": engine.base_id,
                             "resident": [info.name for info in engine.hub.resident()]})

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        await serving.gate.authenticate(request, admin=True)  # with --auth: adapter names are for admins
        data, content_type = engine.metrics.render()
        return Response(data, media_type=content_type)
