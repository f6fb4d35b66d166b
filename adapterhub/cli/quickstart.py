"""``adapterhub quickstart``: the main job (see adapterhub/quickstart.py)."""

from __future__ import annotations

import argparse
import sys

from ..paths import REGISTRY_HELP
from ._output import print_json, print_table


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("quickstart", help="train (once), load and serve the medical, finance and "
                                                      "legal adapters on one base")
    parser.add_argument("--recipes", default=None, help="folder with the shipped recipes (default: ./recipes)")
    parser.add_argument("--registry", default=None, help=REGISTRY_HELP)
    parser.add_argument("--json", action="store_true", help="print the report as JSON (progress goes to stderr)")
    parser.set_defaults(handler=_quickstart)


def _quickstart(args: argparse.Namespace) -> int:
    from ..quickstart import run

    report = run(recipes=args.recipes, registry=args.registry,
                 say=lambda line: print(line, file=sys.stderr if args.json else sys.stdout, flush=True))
    if args.json:
        print_json(report)
        return 0
    rows = [(domain, text, label) for domain, pairs in report["answers"].items() for text, label in pairs]
    print_table(rows, ["domain", "fresh input", "answer"], title="Each domain on fresh inputs")
    print_table(report["mixed"], ["row's domain", "input", "answer"], title="One mixed batch: three domains, one forward over the prompts")
    print_table([(d, _percent(a), _percent(report["base_accuracy"][d]), _percent(report["live_accuracy"][d]))
                 for d, a in report["accuracy"].items()],
                ["domain", "validation accuracy", "bare base (same prompt)",
                 f"live re-check (first {report['live_rows']} rows)"])
    loads = ", ".join(f"{d} {ms:.1f} ms" for d, ms in report["load_ms"].items())
    print(f"load (registry -> resident): {loads}")
    print(f"switch: p50 {report['switch_us']['p50']:.1f} µs, p99 {report['switch_us']['p99']:.1f} µs")
    print(f"registry: {report['registry']}" + (f" (trained now: {', '.join(report['trained'])})" if report["trained"] else ""))
    return 0


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"
