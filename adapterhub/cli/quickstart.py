"""``adapterhub quickstart``: the main job (see adapterhub/quickstart.py)."""

from __future__ import annotations

import argparse

from ._output import print_json, print_table


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("quickstart", help="train (once), load and serve the medical, finance and "
                                                      "legal adapters on one base")
    parser.add_argument("--recipes", default=None, help="folder with the shipped recipes (default: ./recipes)")
    parser.add_argument("--registry", default=None, help="registry root (default: the default registry)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(handler=_quickstart)


def _quickstart(args: argparse.Namespace) -> int:
    from ..quickstart import run

    report = run(recipes=args.recipes, registry=args.registry)
    if args.json:
        print_json(report)
        return 0
    rows = [(domain, text, label) for domain, pairs in report["answers"].items() for text, label in pairs]
    print_table(rows, ["domain", "fresh input", "answer"], title="Each domain on fresh inputs")
    print_table(report["mixed"], ["row's domain", "input", "answer"], title="One mixed batch: three domains, one forward over the prompts")
    def pct(value):
        return "n/a" if value is None else f"{value:.1%}"

    print_table([(d, pct(a), pct(report["base_accuracy"][d]), pct(report["live_accuracy"][d]))
                 for d, a in report["accuracy"].items()],
                ["domain", "validation accuracy", "bare base (same prompt)", "live re-check (first rows)"])
    loads = ", ".join(f"{d} {ms:.1f} ms" for d, ms in report["load_ms"].items())
    print(f"load (registry -> resident): {loads}")
    print(f"switch: p50 {report['switch_us']['p50']:.1f} µs, p99 {report['switch_us']['p99']:.1f} µs")
    print(f"registry: {report['registry']}" + (f" (trained now: {', '.join(report['trained'])})" if report["trained"] else ""))
    return 0
