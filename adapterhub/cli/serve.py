"""``adapterhub serve`` (the HTTP service) and ``adapterhub keys`` (its API keys)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..runtime.routers import FALLBACKS
from ._options import add_registry_option, add_threads_option, add_unpacked_4bit_option
from ._safety import add_safety_options, safety_options, start_metrics_port


DEFAULT_MAX_RESIDENT = 32  # a server's residency is always bounded (README "Many adapters" sizes it)
DEFAULT_HOST_BUDGET_MB = 1024.0


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser("serve", help="serve adapters over HTTP (OpenAI and LoRAX routes, mixed batching)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--base", default=None, help="base model: alias, folder or HF id (default: the embedded base)")
    serve.add_argument("--base-name", default=None, help="the base's model id in requests (default: its alias)")
    serve.add_argument("--quantize", choices=["nf4", "int8"], default=None)
    serve.add_argument("--device", default="auto")
    add_unpacked_4bit_option(serve)
    serve.add_argument("--adapters", nargs="*", default=[], metavar="REF",
                       help="preload these registry references or folders (others load on first use)")
    add_registry_option(serve)
    add_threads_option(serve)
    serve.add_argument("--router", default=None, metavar="REF",
                       help="router for model='auto' (adapterhub router build); requests may then name 'auto'")
    serve.add_argument("--fallback", choices=FALLBACKS, default="base",
                       help="what model='auto' serves when the router is unsure (default: the bare base)")
    serve.add_argument("--auth", action="store_true", help="require 'Authorization: Bearer <key>' (adapterhub keys)")
    serve.add_argument("--insecure", action="store_true", help="allow a non-loopback --host without --auth")
    serve.add_argument("--max-batch-rows", type=int, default=32, help="rows in the running batch (1: no batching)")
    serve.add_argument("--max-queue", type=int, default=256, help="requests waiting before 503 (default 256)")
    serve.add_argument("--max-new-tokens", type=int, default=512, help="cap on max_tokens per request")
    serve.add_argument("--max-resident", type=int, default=DEFAULT_MAX_RESIDENT,
                       help=f"device slots: most adapters resident (LRU eviction; default {DEFAULT_MAX_RESIDENT})")
    serve.add_argument("--memory-budget-mb", type=float, default=None,
                       help="device slots: most MiB of adapter weights resident (default: no byte budget)")
    serve.add_argument("--host-budget-mb", type=float, default=DEFAULT_HOST_BUDGET_MB,
                       help="host tier: MiB of read, checked adapters kept in RAM below the slots (0: none; "
                            f"default {DEFAULT_HOST_BUDGET_MB:g})")
    serve.add_argument("--metrics-top-k", type=int, default=32,
                       help="adapters with their own /metrics series (the K busiest); the rest count as 'other' "
                            "(default 32)")
    serve.add_argument("--allow-hf", action="store_true", help="let requests name hf://org/repo[@rev] adapters")
    serve.add_argument("--log-text", action="store_true", help="also log prompt and answer text")
    add_safety_options(serve)
    serve.add_argument("--channel", default=None, help="a bare adapter name means name@CHANNEL when that channel "
                       "exists (e.g. prod); channels are followed live (adapterhub promote / rollback)")
    serve.add_argument("--strict", action="store_true",
                       help="refuse adapters whose contract was never evaluated on this base's quantisation")
    ray = serve.add_argument_group("scale out on Ray Serve (pip install 'adapterhub[ray]')")
    ray.add_argument("--ray", action="store_true", help="serve from N Ray Serve replicas routed by adapter")
    ray.add_argument("--replicas", type=int, default=2, help="replicas, each with its own base (default 2)")
    ray.add_argument("--adapters-per-replica", type=int, default=8, help="adapters a replica keeps (LRU, default 8)")
    ray.add_argument("--cpus-per-replica", type=float, default=1.0, help="Ray CPUs reserved per replica")
    ray.add_argument("--ray-address", default=None, help="join this Ray cluster (default: start a local one)")
    ray.add_argument("--hub-namespace", default=None, metavar="ORG",
                     help="a replica missing adapter NAME pulls hf://ORG/NAME from the Hub (HF_ENDPOINT) by commit")
    serve.set_defaults(handler=_serve)

    keys = subparsers.add_parser("keys", help="API keys for `adapterhub serve --auth`")
    verbs = keys.add_subparsers(dest="keys_command", metavar="VERB", required=True)
    create = verbs.add_parser("create", help="create a key and print its secret once")
    create.add_argument("name")
    create.add_argument("--allow", nargs="*", default=[], metavar="REF", help="adapters it may use (default: all)")
    create.add_argument("--admin", action="store_true", help="may load and unload adapters")
    create.add_argument("--rpm", type=int, default=None, help="requests per minute (default: unlimited)")
    create.add_argument("--json", action="store_true", help='print {"name", "key"}')
    create.set_defaults(handler=_keys_create)
    listing = verbs.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_keys_list)
    revoke = verbs.add_parser("revoke", help="revoke a key")
    revoke.add_argument("name")
    revoke.set_defaults(handler=_keys_revoke)


def _serve(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..serve.server import check_exposure

    check_exposure(args.host, auth=args.auth, insecure=args.insecure)  # before minutes of loading
    if args.max_batch_rows < 1 or args.max_queue < 0 or args.max_new_tokens < 1:
        raise ConfigError("--max-batch-rows and --max-new-tokens must be >= 1, --max-queue >= 0")
    from .. import AdapterHub
    from ..serve import ServeOptions, build_app, serve

    options = ServeOptions(max_rows=args.max_batch_rows, max_queue=args.max_queue, max_new_tokens=args.max_new_tokens,
                           auth=args.auth, log_text=args.log_text, allow_hf=args.allow_hf, base_name=args.base_name,
                           metrics_top_k=args.metrics_top_k, channel=args.channel, strict=args.strict,
                           **safety_options(args))
    if args.ray:
        if args.replicas < 1 or args.adapters_per_replica < 1:
            raise ConfigError("--replicas and --adapters-per-replica must be >= 1")
        return _serve_on_ray(args, options)
    hub_args: dict[str, Any] = {"quantize": args.quantize, "registry": args.registry, "device": args.device,
                                "max_resident": args.max_resident, "memory_budget_mb": args.memory_budget_mb,
                                "host_budget_mb": args.host_budget_mb, "packed_4bit": args.packed_4bit}
    hub = AdapterHub(args.base, **hub_args) if args.base else AdapterHub(**hub_args)
    for ref in args.adapters:
        print(f"loaded {hub.load(ref).name}", file=sys.stderr)
    if args.router:
        print(f"routing model='auto' with {hub.use_router(args.router, fallback=args.fallback).ref}", file=sys.stderr)
    app = build_app(hub, options)
    start_metrics_port(app, args.metrics_port)
    return serve(app, host=args.host, port=args.port)


def _serve_on_ray(args: argparse.Namespace, options: Any) -> int:
    from ..serve.replicas import ReplicaSettings, serve_on_ray

    if args.adapters:
        print("note: --adapters is ignored with --ray; replicas load adapters as their traffic asks",
              file=sys.stderr)
    settings = ReplicaSettings(base=args.base, quantize=args.quantize, device=args.device, registry=args.registry,
                               packed_4bit=args.packed_4bit,
                               hub_namespace=args.hub_namespace, replicas=args.replicas,
                               adapters_per_replica=args.adapters_per_replica,
                               cpus_per_replica=args.cpus_per_replica, options=options,
                               router=args.router, fallback=args.fallback)
    return serve_on_ray(settings, host=args.host, port=args.port, address=args.ray_address)


def _keys_create(args: argparse.Namespace) -> int:
    from ..serve.auth import KeyStore

    key = KeyStore().create(args.name, allow=args.allow, admin=args.admin, rpm=args.rpm)
    if args.json:
        print(json.dumps({"name": args.name, "key": key}))
    else:
        print(key)
        print(f"key {args.name!r} created; this is the only time it is shown", file=sys.stderr)
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    from ..serve.auth import KeyStore

    keys = KeyStore().list()
    if args.json:
        print(json.dumps([key.to_dict() for key in keys], indent=2))
        return 0
    for key in keys:
        state = "revoked" if key.revoked else "live"
        allow = ",".join(key.allow) or "*"
        print(f"{key.name}\t{state}\tallow={allow}\tadmin={'yes' if key.admin else 'no'}\trpm={key.rpm or '-'}")
    return 0


def _keys_revoke(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..serve.auth import KeyStore

    if not KeyStore().revoke(args.name):
        raise ConfigError(f"no live key named {args.name!r} (adapterhub keys list)")
    print(f"revoked {args.name}", file=sys.stderr)
    return 0
