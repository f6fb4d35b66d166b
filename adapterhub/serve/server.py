"""Run the app under uvicorn: print the URL, serve, and on SIGTERM drain in-flight requests and exit 0.

Also :class:`ServerThread`, the same server in a background thread (tests, benchmarks, notebooks).

>>> with ServerThread(build_app(hub)) as server:  # doctest: +SKIP
...     httpx.get(server.url + "/health").json()
{'status': 'ok'}
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
import sys
import threading
import time
from typing import Any

from ..errors import ConfigError

_LOOPBACK = {"localhost", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine."""
    if host in _LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, *, auth: bool, insecure: bool) -> None:
    """Refuse a non-loopback address without ``--auth`` unless ``--insecure`` says so.

    Raises:
        ConfigError: the refusal, with both ways out.
    """
    if not is_loopback(host) and not auth and not insecure:
        raise ConfigError(f"refusing to listen on {host} without --auth: anyone who reaches it could use every "
                          "adapter. Add --auth (and create keys with `adapterhub keys create`), or --insecure "
                          "if the network is yours")
    if not is_loopback(host) and not auth:
        print(f"WARNING: --insecure: serving {host} without --auth; anyone who reaches it may use, load and unload "
              "every adapter", file=sys.stderr, flush=True)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _header_timed(seconds: float) -> type:
    """uvicorn's h11 protocol closing a connection that has not finished its first request's headers within
    ``seconds`` (later requests on a kept-alive connection meet uvicorn's keep-alive timeout the same way)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimed(H11Protocol):
        header_timer: Any = None

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.header_timer = self.loop.call_later(seconds, self.headers_late)

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not None and self.header_timer is not None:
                self.header_timer.cancel()
                self.header_timer = None

        def connection_lost(self, exc: Exception | None) -> None:
            if self.header_timer is not None:
                self.header_timer.cancel()
            super().connection_lost(exc)

        def headers_late(self) -> None:
            if self.cycle is None and not self.transport.is_closing():
                self.transport.close()

    return HeaderTimed


def _server(app: Any, host: str, port: int) -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            # drain (uvicorn waits for open requests), then return normally: exit code 0, no re-raised signal
            engine = getattr(getattr(self.config.app, "state", None), "engine", None)
            if engine is not None:
                engine.draining = True  # /ready answers 503 and new requests on open connections get 503
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True

    options = getattr(getattr(getattr(app, "state", None), "engine", None), "options", None)
    limits = {} if options is None else {"http": _header_timed(options.header_timeout_s),
                                         "limit_concurrency": options.max_connections}
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on",
                            timeout_keep_alive=5, timeout_graceful_shutdown=None, **limits)
    return Server(config)


def serve(app: Any, *, host: str = "127.0.0.1", port: int = 8000) -> int:
    """Serve until SIGTERM/SIGINT, finishing in-flight requests; returns 0."""
    from .unwind import limit_heap_arenas

    limit_heap_arenas()  # large bodies parsed across worker threads must not fragment a heap per thread
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access = logging.getLogger("adapterhub.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False
    server = _server(app, host, port)
    shown = f"[{host}]" if ":" in host else host
    print(f"adapterhub serving on http://{shown}:{port}  (OpenAI base_url http://{shown}:{port}/v1)", flush=True)
    server.run()
    print("adapterhub: drained, bye", file=sys.stderr, flush=True)
    return 0


class ServerThread:
    """A real uvicorn server on ``127.0.0.1:<free port>`` in a daemon thread."""

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host, self.port = host, port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.server = _server(app, self.host, self.port)
        self.thread = threading.Thread(target=self.server.run, name="adapterhub-uvicorn", daemon=True)

    def start(self, timeout: float = 30) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on {self.url} did not start")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 30) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
