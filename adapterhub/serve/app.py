"""The FastAPI application: OpenAI, LoRAX/TGI, adapter admin, health and metrics routes.

Every route reads its body itself (so auth answers before body checks), every
failure leaves as OpenAI's error JSON, and :mod:`.access` logs and counts each
request once it has sent its last byte.

>>> app = build_app(hub, ServeOptions(auth=True))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import responses as shape
from .access import AccessLog, note
from .auth import KeyStore, RateLimiter
from .engine import Engine, Prepared, ServeOptions
from .protocol import (ChatRequest, ClassifyRequest, CompletionRequest, GenerateRequest, LoadAdapterRequest,
                       ServeError, UnloadAdapterRequest, from_exception)

log = logging.getLogger("adapterhub.serve")
MAX_BODY_BYTES = 8 * 2**20


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
                # LoRAX's client reads error_type; OpenAI's reads error.message/type/code
                extra = {"error_type": "validation" if error.status == 400 else "generation"} if tgi else None
                return error_response(error, extra)

        return guarded


def build_app(hub: Any, options: ServeOptions | None = None, *, engine: Engine | None = None) -> FastAPI:
    """The app serving ``hub`` (an :class:`adapterhub.AdapterHub`); the scheduler runs while the app is up."""
    from contextlib import asynccontextmanager

    engine = engine or Engine(hub, options)
    options = engine.options
    keys = KeyStore(options.keys_path) if options.auth else None
    limiter = RateLimiter()

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
    app.state.engine = engine
    app.add_middleware(AccessLog, metrics=engine.metrics, log_text=options.log_text)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        message = f"no route {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
        return error_response(ServeError(exc.status_code, message, code=code))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(ServeError(400, str(exc), code="invalid_request"))

    # --- helpers --------------------------------------------------------------------------
    def authenticate(request: Request, *, admin: bool = False) -> Any:
        if keys is None:
            return None
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            raise ServeError(401, "missing API key: send 'Authorization: Bearer <key>'", code="missing_api_key",
                             headers={"WWW-Authenticate": "Bearer"})
        key = keys.verify(token.strip()) if scheme.lower() == "bearer" else None
        if key is None:
            raise ServeError(401, "invalid or revoked API key", code="invalid_api_key",
                             headers={"WWW-Authenticate": "Bearer"})
        note(request, key=key.name)
        if admin and not key.admin:
            raise ServeError(403, f"key {key.name!r} is not an admin key (adapterhub keys create NAME --admin)",
                             code="admin_required")
        wait = limiter.check(key.name, key.rpm)
        if wait is not None:
            raise ServeError(429, f"key {key.name!r} is over its limit of {key.rpm} requests per minute",
                             code="rate_limit_exceeded", headers={"Retry-After": str(wait)})
        return key

    def permit(request: Request, key: Any, model: str) -> str | None:
        note(request, model=model[:200])
        ref = engine.model_ref(model)
        if key is not None and not key.may_use(ref):
            raise ServeError(403, f"key {key.name!r} may not use {model!r} (allowed: {', '.join(key.allow)})",
                             code="model_not_allowed")
        return ref

    async def parse(request: Request, model: type[BaseModel]) -> Any:
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
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "body"
            problem = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
            raise ServeError(400, f"{where}: {problem} ({error.error_count()} problem(s) in the body)",
                             code="invalid_value", type="invalid_request_error") from None
        problems = body.unsupported() if hasattr(body, "unsupported") else []
        if problems:
            raise ServeError(400, "; ".join(problems), code="unsupported_parameter")
        return body

    async def prepare(request: Request, key: Any, model: str, **kwargs: Any) -> Prepared:
        ref = permit(request, key, model)
        entry = await run_in_threadpool(engine.acquire, ref)
        note(request, adapter="base" if ref is None else ref)  # a metrics label only once it resolved
        prepared = engine.prepare(ref, entry, **kwargs)
        note(request, prompt_tokens=len(prepared.prompt), text_in=kwargs.get("text") or kwargs.get("messages"))
        return prepared

    async def run(request: Request, prepared: Prepared) -> dict[str, Any]:
        """Collect a whole answer; a client that disconnects meanwhile frees its row (or its queue place)."""
        import asyncio

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
        finish(request, prepared, done)
        return done

    def finish(request: Request, prepared: Prepared, done: dict[str, Any]) -> None:
        engine.metrics.tokens(prepared.label, prompt=len(prepared.prompt), generated=done["tokens"])
        note(request, completion_tokens=done["tokens"], text_out=done["text"])

    async def stream(request: Request, prepared: Prepared,
                     render: Callable[[dict[str, Any]], AsyncIterator[str]]) -> StreamingResponse:
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
                yield shape.sse(error.body())
            finally:
                job.cancel()
                await events.aclose()

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # --- OpenAI ---------------------------------------------------------------------------
    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        key = authenticate(request)
        listed = await run_in_threadpool(engine.models)
        if key is not None:
            listed = [m for m in listed if m["id"] == engine.base_id or key.may_use(m["id"])]
        return {"object": "list", "data": listed}

    async def openai_generate(request: Request, chat: bool) -> Response:
        key = authenticate(request)
        body = await parse(request, ChatRequest if chat else CompletionRequest)
        max_tokens = (body.max_completion_tokens or body.max_tokens) if chat else body.max_tokens
        inputs = {"messages": [m.plain() for m in body.messages]} if chat else {"text": body.text(), "chat": False}
        prepared = await prepare(request, key, body.model, max_tokens=max_tokens,
                                 temperature=1.0 if body.temperature is None else body.temperature,
                                 top_p=body.top_p, seed=body.seed, stops=body.stops(), **inputs)
        rid = shape.new_id("chatcmpl" if chat else "cmpl")
        if not body.stream:
            done = await run(request, prepared)
            make = shape.chat if chat else shape.completion
            return JSONResponse(make(rid, body.model, done["text"], done["finish"], len(prepared.prompt),
                                     done["tokens"]))
        include_usage = bool((body.stream_options or {}).get("include_usage"))

        async def render(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
            if chat:
                yield shape.sse(shape.chat_chunk(rid, body.model, {"role": "assistant", "content": ""}, None))
            async for event in events:
                if event["type"] == "token" and event["text"]:
                    yield shape.sse(shape.chat_chunk(rid, body.model, {"content": event["text"]}, None) if chat
                                    else shape.completion_chunk(rid, body.model, event["text"], None))
                elif event["type"] == "done":
                    finish(request, prepared, event)
                    yield shape.sse(shape.chat_chunk(rid, body.model, {}, event["finish"]) if chat
                                    else shape.completion_chunk(rid, body.model, "", event["finish"]))
                    if include_usage:
                        yield shape.sse(shape.usage_chunk(rid, body.model, "chat.completion.chunk" if chat
                                                          else "text_completion", len(prepared.prompt),
                                                          event["tokens"]))
            yield shape.sse("[DONE]")

        return await stream(request, prepared, render)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await openai_generate(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await openai_generate(request, chat=True)

    @app.post("/v1/classify")
    async def classify(request: Request) -> dict[str, Any]:
        key = authenticate(request)
        body = await parse(request, ClassifyRequest)
        ref = permit(request, key, body.model)
        texts = body.texts()
        rows = await run_in_threadpool(engine.classify, ref, texts)
        note(request, adapter=ref)
        note(request, text_in=texts, text_out=[row["label"] for row in rows])
        data = [{"index": i, "label": row["label"], "probs": row["probs"], "labels": row["labels"],
                 "scores": row["scores"], "num_classes": len(row["labels"])} for i, row in enumerate(rows)]
        return {"id": shape.new_id("classify"), "object": "list", "created": int(time.time()),
                "model": body.model, "data": data}

    @app.post("/v1/tag")
    async def tag(request: Request) -> dict[str, Any]:
        key = authenticate(request)
        body = await parse(request, ClassifyRequest)
        ref = permit(request, key, body.model)
        texts = body.texts()
        found = await run_in_threadpool(engine.tag, ref, texts)
        note(request, adapter=ref)
        note(request, text_in=texts, text_out=[[entity["text"] for entity in entities] for entities in found])
        data = [{"index": i, "entities": entities} for i, entities in enumerate(found)]
        return {"id": shape.new_id("tag"), "object": "list", "created": int(time.time()), "model": body.model,
                "data": data}

    # --- LoRAX / TGI ------------------------------------------------------------------------
    async def tgi(request: Request, force_stream: bool | None) -> Response:
        key = authenticate(request)
        body = await parse(request, GenerateRequest)
        p = body.parameters
        if p.adapter_source == "local":
            raise ServeError(400, "adapter_source='local' is not served per request; an admin loads folders "
                             "with /v1/load_lora_adapter, then requests name them", code="unsupported_parameter")
        sampled = p.sampling()
        prepared = await prepare(request, key, p.adapter_id or engine.base_id, text=body.inputs, chat=False,
                                 max_tokens=p.max_new_tokens or 20,
                                 temperature=(p.temperature or 1.0) if sampled else 0.0,
                                 top_p=p.top_p if sampled else None, top_k=p.top_k if sampled else None,
                                 seed=p.seed, stops=list(p.stop), stop_at_eos=not p.ignore_eos_token)
        seed = prepared.sampler.seed
        prefix = body.inputs if p.return_full_text else ""
        streaming = body.stream if force_stream is None else force_stream
        if not streaming:
            done = await run(request, prepared)
            answer: dict[str, Any] = {"generated_text": prefix + done["text"]}
            if p.details:
                tokens = [shape.tgi_token(e, engine.stepper.tokenizer.decode([e["id"]])) for e in done["token_events"]]
                answer["details"] = shape.tgi_details(done["finish"], len(prepared.prompt), tokens, seed)
            return JSONResponse([answer] if request.url.path == "/" else answer)

        async def render(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
            held = None
            async for event in events:
                if event["type"] == "token":
                    if held is not None:
                        yield shape.sse(shape.tgi_stream(held, held["text"], None, 0, seed, None))
                    held = event
                elif held is not None:
                    finish(request, prepared, event)
                    yield shape.sse(shape.tgi_stream(held, held["text"], event, len(prepared.prompt), seed,
                                                     prefix + event["text"]))

        return await stream(request, prepared, render)

    @app.post("/generate")
    async def generate(request: Request) -> Response:
        return await tgi(request, False)

    @app.post("/generate_stream")
    async def generate_stream(request: Request) -> Response:
        return await tgi(request, True)

    @app.post("/")
    async def compat(request: Request) -> Response:
        return await tgi(request, None)

    # --- adapters at run time (admin) --------------------------------------------------------
    @app.post("/v1/load_lora_adapter")
    async def load_adapter(request: Request) -> dict[str, Any]:
        authenticate(request, admin=True)
        body = await parse(request, LoadAdapterRequest)
        note(request, model=body.lora_name[:200])
        loaded = await run_in_threadpool(engine.load, body.lora_name, body.lora_path)
        note(request, adapter=body.lora_name)
        return {"object": "adapter", **loaded}

    @app.post("/v1/unload_lora_adapter")
    async def unload_adapter(request: Request) -> dict[str, Any]:
        authenticate(request, admin=True)
        body = await parse(request, UnloadAdapterRequest)
        note(request, model=body.lora_name[:200])
        if not await run_in_threadpool(engine.unload, body.lora_name):
            raise ServeError(404, f"adapter {body.lora_name!r} is not loaded", code="model_not_found")
        note(request, adapter=body.lora_name)
        return {"object": "adapter", "lora_name": body.lora_name, "unloaded": True}

    # --- operations ------------------------------------------------------------------------
    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        if engine.draining:
            return error_response(ServeError(503, "draining: finishing in-flight requests", code="draining"))
        return JSONResponse({"status": "ready", "base": engine.base_id,
                             "resident": [info.name for info in engine.hub.resident()]})

    @app.get("/metrics")
    async def metrics() -> Response:
        data, content_type = engine.metrics.render()
        return Response(data, media_type=content_type)

    return app


async def _watch_disconnect(request: Request) -> None:
    import asyncio

    while not await request.is_disconnected():
        await asyncio.sleep(0.2)
