"""``adapterhub quickstart``: the main job (see adapterhub/quickstart.py)."""

from __future__ import annotations

import argparse
import sys

from ._options import add_registry_option, add_threads_option
from ._output import print_json, print_table


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("quickstart", help="train (once), load and serve the medical, finance and "
                                                      "legal adapters on one base")
    parser.add_argument("--recipes", default=None, help="folder with the shipped recipes (default: ./recipes)")
    add_registry_option(parser)
    parser.add_argument("--recheck", default="12", metavar="N|all",
                        help="validation rows per domain re-scored through the runtime now (default 12; "
                             "'all' re-scores every row and gives back the recorded accuracy)")
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
    print_table([(d, _percent(a, report["validation_rows"][d]), _percent(report["base_accuracy"][d]),
                  _percent(report["live_accuracy"][d], report["live_rows"][d]))
                 for d, a in report["accuracy"].items()],
                ["domain", "validation accuracy (at training)", "bare base (same prompt)", "re-scored now"],
                title="Validation accuracy")
    if live_rows is not None:
        print(f"re-scored now: the first {live_rows} validation rows of each domain through the serving path, a "
              f"check that serving scores as training did; on {live_rows} rows one answer moves it "
              f"{1 / live_rows:.0%}, so it need not match the full set (--recheck all re-scores every row)")
    loads = ", ".join(f"{d} {ms:.1f} ms" for d, ms in report["load_ms"].items())
    print(f"load (registry -> resident): {loads}")
    print(f"switch: p50 {report['switch_us']['p50']:.1f} µs, p99 {report['switch_us']['p99']:.1f} µs")
    trained = f" (trained now: {', '.join(report['trained'])}; run folders in {report['runs']})" if report["trained"] else ""
    print(f"registry: {report['registry']} ({report['registry_origin']}){trained}")
    return 0


def _recheck_rows(text: str) -> int | None:
    from ..errors import ConfigError

    if text == "all":
        return None
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"--recheck takes a number of rows >= 1 or 'all', got {text!r}")
    return int(text)


def _percent(value: float | None, rows: int | None = None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1%}" + (f" of {rows}" if rows else "")
