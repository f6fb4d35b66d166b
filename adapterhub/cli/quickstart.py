"""``adapterhub quickstart``: the main job (see adapterhub/quickstart.py)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._options import add_registry_option, add_threads_option
from ._output import print_json, print_table


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("quickstart", help="train (once), load and serve the medical, finance and "
                                                      "legal adapters on one base")
    parser.add_argument("--recipes", default=None, help="folder with the shipped recipes (default: ./recipes)")
    add_registry_option(parser)
    parser.add_argument("--recheck", default="all", metavar="N|all",
                        help="validation rows per domain re-scored through the runtime now (default all: the "
                             "rows the accuracy recorded at training was measured on; N: a quicker sample of the "
                             "first N rows)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON (progress goes to stderr)")
    add_threads_option(parser)
    parser.set_defaults(handler=_quickstart)


def _quickstart(args: argparse.Namespace) -> int:
    from ..quickstart import run

    import torch

    from ..cpu import chosen_threads

    live_rows = _recheck_rows(args.recheck)
    why = chosen_threads(args.threads)[1]
    print(f"CPU threads: {torch.get_num_threads()} ({why}; choose with --threads N)",
          file=sys.stderr if args.json else sys.stdout)
    report = run(recipes=args.recipes, registry=args.registry, live_rows=live_rows,
                 say=lambda line: print(line, file=sys.stderr if args.json else sys.stdout, flush=True))
    if args.json:
        print_json(report)
        return 0
    rows = [(domain, text, label) for domain, pairs in report["answers"].items() for text, label in pairs]
    print_table(rows, ["domain", "fresh input", "answer"], title="Each domain on fresh inputs")
    print_table(report["mixed"], ["row's domain", "input", "answer"], title="One mixed batch: three domains, one forward over the prompts")
    _print_accuracy(report)
    loads = ", ".join(f"{d} {ms:.1f} ms" for d, ms in report["load_ms"].items())
    print(f"load (registry -> resident): {loads}")
    print(f"switch: p50 {report['switch_us']['p50']:.1f} µs, p99 {report['switch_us']['p99']:.1f} µs")
    trained = f" (trained now: {', '.join(report['trained'])}; run folders in {report['runs']})" if report["trained"] else ""
    print(f"registry: {report['registry']} ({report['registry_origin']}){trained}")
    return 0


def _print_accuracy(report: dict[str, Any]) -> None:
    """Validation accuracy recorded at training beside the re-check; a re-check of fewer rows says it is a sample."""
    sampled = [d for d in report["accuracy"] if report["live_rows"][d] != report["validation_rows"][d]]
    print_table([(d, _percent(a, report["validation_rows"][d]), _percent(report["base_accuracy"][d]),
                  _percent(report["live_accuracy"][d], report["live_rows"][d], first=d in sampled))
                 for d, a in report["accuracy"].items()],
                ["domain", "validation accuracy (at training)", "bare base (same prompt)", "re-scored now"],
                title="Validation accuracy")
    if sampled:
        print(f"re-scored now on {', '.join(sampled)}: a sample of the first validation rows through the serving "
              "path, not the rows the figure at training covers, so the two need not match (one answer moves "
              "it by 1/rows); --recheck all re-scores every row and compares like with like")
    else:
        print("re-scored now: every validation row again through the serving path; equal figures show that "
              "serving scores as training did")


def _recheck_rows(text: str) -> int | None:
    from ..errors import ConfigError

    if text == "all":
        return None
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"--recheck takes a number of rows >= 1 or 'all', got {text!r}")
    return int(text)


def _percent(value: float | None, rows: int | None = None, *, first: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1%}" + (f" of {'first ' if first else ''}{rows}" if rows else "")
