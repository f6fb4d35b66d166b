"""The HTTP service on N Ray Serve replicas, each request routed to a replica that holds its adapter.

Two deployments::

    client ──HTTP──► Router (ingress) ──handle, multiplexed_model_id = request's adapter──► AdapterReplica × N
                                                                                            (one AdapterHub + scheduler
                                                                                             + the same FastAPI app)

The router reads only the adapter a request names (``model``, or LoRAX's
``parameters.adapter_id``) and forwards the raw request; Ray Serve's model
multiplexing sends it to a replica that already has that adapter loaded (loading
it, with LRU eviction, otherwise). Each replica runs the single-process app of
:func:`adapterhub.serve.build_app` in-process, so routes, auth, limits, error
shapes and streaming are the same, and requests for different adapters that
reach one replica still share its mixed batches.

Adapters reach replicas through the registry: a replica resolves a name in its
local registry, else pulls ``hf://<hub_namespace>/<name>`` by commit from the Hub
(``HF_ENDPOINT`` for a private Hub-compatible server) into it — pulls are
idempotent per commit, and no SQLite file is shared over a network.

Channels (``finance@prod``) are followed by every replica's own engine (see :mod:`.rollout`): replicas
that share one registry folder (``registry`` without ``{replica}``, on one host) all see a promotion or
rollback within their poll interval; the multiplexed id stays ``finance@prod``, and each request pins the
exact version the channel holds when it arrives.

>>> app = ray_app(ReplicaSettings(base="smollm2-135m-instruct", replicas=2, adapters_per_replica=4))  # doctest: +SKIP
>>> ray.serve.run(app, route_prefix="/")  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any, AsyncIterator

from ..runtime.routers import auto_among
from .engine import ServeOptions

REPLICA_HEADER = "x-adapterhub-replica"  # which replica answered (and its pid)
RESIDENT_HEADER = "x-adapterhub-resident"  # the adapters resident there after the request


@dataclass
class ReplicaSettings:
    """How to build every replica (the ``adapterhub serve --ray`` flags)."""

    base: str | None = None  # alias, folder or HF id (default: the embedded base)
    quantize: str | None = None
    device: str = "auto"
    packed_4bit: bool | None = None  # False: 4-bit layers dequantise every forward (see AdapterHub)
    registry: str | None = None  # local registry root; "{replica}" in it gives each replica its own
    hub_namespace: str | None = None  # pull unknown adapter NAME from hf://<namespace>/<NAME>
    replicas: int = 2
    adapters_per_replica: int = 8  # Ray's multiplex LRU and the hub's max_resident
    cpus_per_replica: float = 1.0
    max_ongoing_requests: int = 64  # per replica: what it may batch together
    options: ServeOptions = field(default_factory=ServeOptions)
    env: dict[str, str] = field(default_factory=dict)  # passed to the replicas' processes (HF_ENDPOINT, ...)
    router: str | None = None  # model="auto": each replica routes with this router of its registry
    fallback: str = "base"  # what auto serves when the router is unsure (base, mix or error)


def adapter_of(body: bytes) -> str:
    """The adapter a request body names (``""`` when it names none, is not JSON, or asks the router with
    ``auto``: any replica routes it with its own router and loads what that chose).

    >>> adapter_of(b'{"model": "finance", "prompt": "x"}'), adapter_of(b'{"parameters": {"adapter_id": "legal"}}')
    ('finance', 'legal')
    >>> adapter_of(b'{"model": "auto:finance,legal", "prompt": "x"}')
    ''
    """
    adapter = _named(body)
    return "" if auto_among(adapter)[0] else adapter


def _named(body: bytes) -> str:
    try:
        payload = json.loads(body) if body else None
    except ValueError:
        return ""
    if not isinstance(payload, dict):
        return ""
    model = payload.get("model")
    if isinstance(model, str):
        return model
    parameters = payload.get("parameters")
    adapter = parameters.get("adapter_id") if isinstance(parameters, dict) else None
    return adapter if isinstance(adapter, str) else ""


class AdapterToken:
    """What the multiplex cache holds for one adapter on one replica; evicting it unloads the adapter."""

    def __init__(self, hub: Any, name: str | None) -> None:
        self.hub, self.name, self.unloaded = hub, name, False

    def __del__(self) -> None:
        if self.unloaded or self.name is None:
            return
        self.unloaded = True
        try:
            self.hub.unload(self.name)
        except Exception:  # noqa: BLE001 - in use by a running row: the hub's own LRU evicts it later
            pass


class ReplicaServer:
    """One replica: a hub, its engine and app, and an in-process ASGI bridge for forwarded requests."""

    def __init__(self, settings: ReplicaSettings, replica_id: str) -> None:
        from ..runtime import AdapterHub
        from .app import build_app

        self.settings, self.replica_id = settings, replica_id
        registry = settings.registry.format(replica=replica_id) if settings.registry else None
        hub_args: dict[str, Any] = {"quantize": settings.quantize, "device": settings.device, "registry": registry,
                                    "max_resident": settings.adapters_per_replica, "packed_4bit": settings.packed_4bit}
        self.hub = AdapterHub(settings.base, **hub_args) if settings.base else AdapterHub(**hub_args)
        if settings.router:
            self.hub.use_router(settings.router, fallback=settings.fallback)
        self.app = build_app(self.hub, settings.options)
        self.engine = self.app.state.engine
        self.engine.start()  # the app's lifespan does this in a standalone server

    def close(self) -> None:
        self.engine.draining = True
        self.engine.stop()
        self.hub.close()

    # --- adapters ----------------------------------------------------------------------------
    def fetch(self, model: str) -> AdapterToken:
        """Make ``model`` resident here: the base (nothing to do), a local name or ref, else a Hub pull
        of ``hf://<hub_namespace>/<model>``.

        Failures are left for the app to answer (404 ``model_not_found`` and the like).
        """
        from ..errors import AdapterHubError
        from .protocol import ServeError

        try:
            if not model or self.engine.model_ref(model) is None:
                return AdapterToken(self.hub, None)
            if self.engine.rollout.follows(model):  # finance@prod: each request pins the version it holds then
                return AdapterToken(self.hub, None)
            return AdapterToken(self.hub, self.engine.load(model, None)["lora_name"])
        except (AdapterHubError, ServeError):
            if not self.settings.hub_namespace or "/" in model:
                return AdapterToken(self.hub, None)
        try:  # name[@revision] -> hf://namespace/name[@revision], pulled into the local registry by commit
            return AdapterToken(self.hub, self.hub.load(f"hf://{self.settings.hub_namespace}/{model}", name=model).name)
        except AdapterHubError:
            return AdapterToken(self.hub, None)

    def resident(self) -> list[str]:
        return [info.name for info in self.hub.resident()]

    # --- requests ------------------------------------------------------------------------------
    async def forward(self, request: dict[str, Any], body: bytes) -> AsyncIterator[Any]:
        """Run one forwarded request through the app: yields ``{"status", "headers"}``, then body chunks.

        Cancelling the iteration (the client went away) disconnects the request inside the app,
        which frees its row.
        """
        messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        gone = asyncio.Event()
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            await messages.put(message)

        task = asyncio.create_task(self.app(_scope(request), receive, send))
        try:
            while True:
                getter = asyncio.ensure_future(messages.get())
                await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    task.result()  # the app ended without a complete response: raise what it raised
                    return
                message = getter.result()
                if message["type"] == "http.response.start":
                    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", [])]
                    headers += [(REPLICA_HEADER, f"{self.replica_id} pid={os.getpid()}"),
                                (RESIDENT_HEADER, ",".join(self.resident()))]
                    yield {"status": message["status"], "headers": headers}
                elif message["type"] == "http.response.body":
                    if message.get("body"):
                        yield bytes(message["body"])
                    if not message.get("more_body"):
                        return
        finally:
            gone.set()
            if not task.done():
                try:
                    await asyncio.wait_for(task, timeout=5)
                except (asyncio.TimeoutError, Exception):  # noqa: BLE001
                    task.cancel()


def _scope(request: dict[str, Any]) -> dict[str, Any]:
    path = request["path"]
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "method": request["method"], "scheme": "http", "path": path, "raw_path": path.encode(),
            "root_path": "", "query_string": request.get("query", "").encode(),
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in request["headers"]],
            "client": tuple(request.get("client") or ("127.0.0.1", 0)), "server": ("127.0.0.1", 80)}


def ray_app(settings: ReplicaSettings) -> Any:
    """The Ray Serve application (router + replicas) for ``serve.run(app, route_prefix="/")``.

    Raises:
        ConfigError: Ray Serve is not installed (``pip install "ray[serve]"``).
    """
    try:
        from ray import serve
    except ImportError:
        from ..errors import ConfigError

        raise ConfigError('serving on Ray needs Ray Serve: pip install "ray[serve]" (or adapterhub[ray])') from None
    from starlette.requests import Request
    from starlette.responses import JSONResponse, StreamingResponse

    @serve.deployment(num_replicas=settings.replicas, max_ongoing_requests=settings.max_ongoing_requests,
                      ray_actor_options={"num_cpus": settings.cpus_per_replica,
                                         "runtime_env": {"env_vars": dict(settings.env)}},
                      health_check_period_s=2, health_check_timeout_s=30)
    class AdapterReplica:
        def __init__(self, replica_settings: dict[str, Any]) -> None:
            options = ServeOptions(**replica_settings.pop("options"))
            context = serve.get_replica_context()
            replica_id = getattr(getattr(context, "replica_id", None), "unique_id", None) or str(os.getpid())
            self.server = ReplicaServer(ReplicaSettings(**replica_settings, options=options), replica_id)

        @serve.multiplexed(max_num_models_per_replica=settings.adapters_per_replica)
        async def adapter(self, model: str) -> AdapterToken:
            return await asyncio.get_running_loop().run_in_executor(None, self.server.fetch, model)

        async def forward(self, request: dict[str, Any], body: bytes) -> AsyncIterator[Any]:
            model = serve.get_multiplexed_model_id()
            if model:
                await self.adapter(model)
            async for item in self.server.forward(request, body):
                yield item

        def __del__(self) -> None:
            server = getattr(self, "server", None)
            if server is not None:
                server.close()

    @serve.deployment(max_ongoing_requests=10_000, ray_actor_options={"num_cpus": 0})
    class Router:
        def __init__(self, replicas: Any) -> None:
            self.replicas = replicas

        async def __call__(self, request: Request) -> Any:
            from ray.exceptions import RayActorError

            body = await request.body()
            meta = {"method": request.method, "path": request.url.path, "query": request.url.query,
                    "headers": list(request.headers.items()),
                    "client": [request.client.host, request.client.port] if request.client else None}
            handle = self.replicas.options(multiplexed_model_id=adapter_of(body), stream=True)
            stream = handle.forward.remote(meta, body)
            try:
                head = await stream.__anext__()
            except (RayActorError, StopAsyncIteration) as error:
                return JSONResponse({"error": {"message": f"the replica serving this request stopped ({type(error).__name__}); "
                                               "retry the request", "type": "server_error",
                                               "code": "replica_unavailable"}},
                                    status_code=503, headers={"Retry-After": "1"})

            async def rest() -> AsyncIterator[bytes]:
                async for chunk in stream:
                    yield chunk

            return StreamingResponse(rest(), status_code=head["status"], headers=_merge(head["headers"]))

    replica_settings = asdict(settings)
    return Router.bind(AdapterReplica.bind(replica_settings))


def _merge(headers: list[tuple[str, str]]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for key, value in headers:
        if key.lower() in ("content-length", "transfer-encoding"):
            continue  # the router re-frames the body
        merged[key] = value
    return merged


def serve_on_ray(settings: ReplicaSettings, *, host: str = "127.0.0.1", port: int = 8000,
                 address: str | None = None) -> int:
    """Deploy on Ray Serve (a local cluster, or ``address``), print the URL, and serve until SIGTERM/SIGINT."""
    import signal
    import sys
    import threading

    import ray
    from ray import serve

    ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    serve.start(http_options={"host": host, "port": port})
    serve.run(ray_app(settings), name="adapterhub", route_prefix="/")
    shown = f"[{host}]" if ":" in host else host
    print(f"adapterhub serving on http://{shown}:{port} with {settings.replicas} Ray replicas "
          f"(OpenAI base_url http://{shown}:{port}/v1)", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()  # replicas finish what they hold, then stop
    ray.shutdown()
    print("adapterhub: replicas stopped, bye", file=sys.stderr, flush=True)
    return 0
