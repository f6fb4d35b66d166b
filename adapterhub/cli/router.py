"""``adapterhub router build NAME --adapters A B ...``, ``router route NAME TEXT...`` and ``router evaluate NAME
--data A=FILE ...``: thin calls into :func:`adapterhub.build_router`, ``hub.route`` and
:func:`adapterhub.runtime.routers.evaluate.evaluate_router`."""

from __future__ import annotations

import argparse

from ..errors import ConfigError
from ..runtime.routers import FALLBACKS
from ._options import add_registry_option, add_threads_option
from ._output import print_fields, print_json, print_table


def register(subparsers: argparse._SubParsersAction) -> None:
    router = subparsers.add_parser(
        "router", help="build and evaluate routers (domain='auto' / model='auto' picks the adapter from the text)",
        description="A router is a registry entry pinned to the exact adapter versions it was built on.")
    verbs = router.add_subparsers(dest="router_command", metavar="VERB")
    common = argparse.ArgumentParser(add_help=False)
    add_registry_option(common)
    add_threads_option(common)
    common.add_argument("--base", default=None, help="base model (default: the one the adapters name)")
    common.add_argument("--json", action="store_true", help="machine-readable output")

    build = verbs.add_parser(
        "build", parents=[common], help="fit a router over registered adapters and register it as NAME",
        description="Reads each adapter's recorded recipe data (or --data NAME=FILE), tries the base's pooled "
                    "hidden states after several layers with a prototype and a linear head, keeps the best on "
                    "validation rows and sets its thresholds there.")
    build.add_argument("name", metavar="NAME", help="registry name of the router")
    build.add_argument("--adapters", nargs="+", required=True, metavar="REF", help="two or more adapters of one base")
    build.add_argument("--data", nargs="+", default=[], metavar="NAME=FILE",
                       help="texts (jsonl with 'text', or txt) for an adapter without recorded recipe data")
    build.add_argument("--ood", nargs="+", default=[], metavar="FILE",
                       help="out-of-domain validation texts: reported per candidate, never fitted")
    build.add_argument("--description", default="", help="one line for people")
    build.set_defaults(handler=_build)

    evaluate = verbs.add_parser(
        "evaluate", parents=[common], help="routing accuracy, confusion matrix, OOD fallback, end-to-end accuracy",
        description="Scores a router on labelled files, one per adapter (NAME=FILE), and on out-of-domain texts.")
    evaluate.add_argument("name", metavar="REF", help="the router: name or name@N")
    evaluate.add_argument("--data", nargs="+", required=True, metavar="NAME=FILE", help="labelled jsonl per adapter")
    evaluate.add_argument("--ood", nargs="+", default=[], metavar="FILE", help="out-of-domain texts (txt or jsonl)")
    evaluate.add_argument("--out", default=None, metavar="DIR", help="write router-eval.json and confusion.png here")
    evaluate.add_argument("--repeats", type=int, default=3, help="timing rounds, auto vs named (0: no timing)")
    evaluate.add_argument("--no-end-to-end", action="store_true", help="skip task accuracy with auto vs named")
    evaluate.set_defaults(handler=_evaluate)
    route = verbs.add_parser(
        "route", parents=[common], help="show what the router chooses for each text, and why",
        description="Per text: the decision (adapter, mix or base), what serves it, the top adapter's probability, "
                    "the runner-up, the distance to the adapters' texts and the reason for a fallback.")
    route.add_argument("name", metavar="REF", help="the router: name or name@N")
    route.add_argument("text", nargs="+", help="text(s) to route")
    route.add_argument("--fallback", choices=FALLBACKS, default="base",
                       help="what a text under the thresholds gets (default: the bare base)")
    route.add_argument("--among", default=None, metavar="A,B", help="only these adapters may be chosen")
    route.set_defaults(handler=_route)
    router.set_defaults(handler=lambda args: router.print_help() or 2)


def named_files(pairs: list[str]) -> dict[str, list[str]]:
    """``["finance=a.jsonl", "finance=b.jsonl"]`` -> ``{"finance": ["a.jsonl", "b.jsonl"]}``."""
    files: dict[str, list[str]] = {}
    for pair in pairs:
        name, _, path = pair.partition("=")
        if not name or not path:
            raise ConfigError(f"--data {pair!r} is not NAME=FILE", fix="write e.g. --data finance=finance.jsonl")
        files.setdefault(name, []).append(path)
    return files


def _base(args: argparse.Namespace):  # noqa: ANN202
    if args.base is None:
        return None
    from ..base.loading import load_base

    return load_base(args.base)


def _build(args: argparse.Namespace) -> int:
    from ..registry import Registry
    from ..runtime.routers.build import build_router, read_texts

    ood = [text for path in args.ood for text in read_texts(path)]
    built = build_router(args.name, adapters=args.adapters, registry=Registry(args.registry), base=_base(args),
                         data=named_files(args.data) or None, ood=ood or None, description=args.description,
                         progress=not args.json)
    if args.json:
        print_json({"record": built.record.to_dict(), "candidates": built.table})
        return 0
    config = built.record.manifest["metrics"]["router"]["chosen"]
    print_fields({"registered": built.record.ref, "layer": config["layer"], "head": config["head"],
                  "adapters": ", ".join(a["ref"] for a in built.record.manifest["source"]["adapters"])})
    print_table([(row["layer"], row["head"], f"{100 * row['validation_accuracy']:.1f}%",
                  f"{100 * row['routed_accuracy']:.1f}%",
                  f"{100 * row['ood_fallback']:.1f}%" if "ood_fallback" in row else "-") for row in built.table],
                ("layer", "head", "validation accuracy", "routed (above thresholds)", "OOD to fallback"),
                title="candidates tried (validation rows)")
    return 0


def _router_hub(args: argparse.Namespace):  # noqa: ANN202
    """A hub on ``--base`` or the base the router ``args.name`` records, over ``--registry``."""
    from ..registry import Registry
    from ..runtime import AdapterHub

    registry = Registry(args.registry)
    base = _base(args)
    if base is None:
        from ..base.loading import load_base

        base = load_base((registry.get(args.name).manifest.get("base") or {}).get("name") or "smollm2-135m-instruct")
    return AdapterHub(base, registry=registry)


def _route(args: argparse.Namespace) -> int:
    among = [name.strip() for name in args.among.split(",") if name.strip()] if args.among else None
    with _router_hub(args) as hub:
        decisions = hub.route(args.text, router=args.name, fallback=args.fallback, among=among)
    if args.json:
        print_json([{"text": text, **decision.to_dict()} for text, decision in zip(args.text, decisions)])
        return 0
    print_table([(text if len(text) <= 60 else text[:57] + "...", d.decision, d.label, f"{d.probability:.3f}",
                  d.runner_up or "-", f"{d.distance:.3f}", d.reason or "-") for text, d in zip(args.text, decisions)],
                ("text", "decision", "served by", "probability", "runner-up", "distance", "why not routed"),
                title=f"router {args.name}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from ..runtime.routers.evaluate import evaluate_router

    with _router_hub(args) as hub:
        report = evaluate_router(hub, args.name, data=named_files(args.data), ood=args.ood,
                                 end_to_end=not args.no_end_to_end, repeats=args.repeats, out=args.out,
                                 progress=not args.json)
    if args.json:
        print_json(report)
        return 0
    print_fields({"router": report["router"], "routing accuracy": f"{100 * report['routing_accuracy']:.1f}%",
                  "top-1 accuracy": f"{100 * report['top1_accuracy']:.1f}%",
                  **({"OOD to the bare base": f"{100 * report['ood_base_share']:.1f}%"} if "ood_base_share" in report
                     else {}),
                  **({"auto / named time": f"{report['timing']['ratio_median']:.3f}x (min "
                      f"{report['timing']['ratio_min']:.3f}, max {report['timing']['ratio_max']:.3f}; the routing "
                      f"pass alone {report['timing']['route_share']:.3f}x)"} if report.get("timing") else {})})
    table = report["confusion"]
    print_table([(row, *(table["counts"][row][c] for c in table["columns"])) for row in table["rows"]],
                ("text from", *table["columns"]), title="served by")
    if report.get("end_to_end"):
        mixed = {"all files": report["end_to_end_mixed"]} if len(report["end_to_end"]) > 1 else {}
        print_table([(name, row["rows"], f"{100 * row['named']:.1f}%", f"{100 * row['auto']:.1f}%",
                      f"{row['points']:+.1f}") for name, row in {**report["end_to_end"], **mixed}.items()],
                    ("adapter", "rows", "named", "auto", "points"), title="task accuracy")
    return 0
