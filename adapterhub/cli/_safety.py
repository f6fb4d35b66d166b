"""``adapterhub serve``'s safety flags (README "Running it safely"): Host names, connection and input caps,
slow-client timeouts and a loopback-only metrics port."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_safety_options(parser: argparse.ArgumentParser) -> None:
    from ..serve.engine import ServeOptions

    defaults = ServeOptions()
    group = parser.add_argument_group("running it safely (README: Running it safely)")
    group.add_argument("--allowed-hosts", nargs="*", default=[], metavar="NAME",
                       help="more Host header names to answer besides the bound address ('*': any)")
    group.add_argument("--max-connections", type=int, default=defaults.max_connections,
                       help=f"open connections before new requests get 503 (default {defaults.max_connections})")
    group.add_argument("--header-timeout", type=float, default=defaults.header_timeout_s, metavar="SECONDS",
                       help=f"close a connection that has not sent its headers by then "
                            f"(default {defaults.header_timeout_s:g})")
    group.add_argument("--max-inputs", type=int, default=defaults.max_inputs,
                       help=f"texts in one /v1/classify or /v1/tag request (default {defaults.max_inputs})")
    group.add_argument("--metrics-port", type=int, default=None,
                       help="also serve /metrics without a key on 127.0.0.1:PORT (for a local scraper)")


def safety_options(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~adapterhub.serve.engine.ServeOptions` fields the safety flags set.

    Raises:
        ConfigError: a cap below 1.
    """
    from ..errors import ConfigError

    if args.max_connections < 1 or args.max_inputs < 1 or args.header_timeout <= 0:
        raise ConfigError("--max-connections, --max-inputs and --header-timeout must be positive")
    return {"host": args.host, "allowed_hosts": tuple(args.allowed_hosts), "max_connections": args.max_connections,
            "header_timeout_s": args.header_timeout, "max_inputs": args.max_inputs}


def start_metrics_port(app: Any, port: int | None) -> None:
    """Serve the app's metrics registry on ``127.0.0.1:port`` (loopback only, no key) when ``port`` is set."""
    if port is None:
        return
    from prometheus_client import start_http_server

    start_http_server(port, addr="127.0.0.1", registry=app.state.engine.metrics.registry)
    print(f"metrics on http://127.0.0.1:{port}/metrics", file=sys.stderr)
