"""``adapterhub promote`` and ``adapterhub rollback`` (channels), and ``adapterhub registry history``.

Thin: :meth:`Registry.promote` / :meth:`Registry.rollback` / :meth:`Registry.history` do the work;
a gate's evaluations run through an :class:`~adapterhub.AdapterHub` on the adapter's own base
(:class:`~adapterhub.lifecycle.ServingEvaluator`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._options import add_registry_option, add_threads_option
from ._output import print_json, print_table

GATE_HELP = ("e.g. 'accuracy >= prod - 0.5 and loss <= holder.loss * 1.1': metrics of the candidate; holder.<metric> "
             "(or <channel>.<metric>, or a bare channel name for the metric on the left) are the current holder's; "
             "rates (accuracy, macro_f1, micro_f1, json_valid, exact_match) in percent")


def register(subparsers: argparse._SubParsersAction) -> None:
    promote = subparsers.add_parser("promote", help="move a channel (name@prod) to a version if its gate holds")
    promote.add_argument("ref", help="the candidate, e.g. finance@4 (with --finish: the name, e.g. finance)")
    promote.add_argument("--channel", required=True, help="the channel tag, e.g. prod")
    promote.add_argument("--gate", default=None, help=GATE_HELP)
    promote.add_argument("--data", default=None, metavar="FILE",
                         help="evaluation file for the candidate and the holder (default: the recipe's test file)")
    promote.add_argument("--canary", default=None, metavar="PERCENT",
                         help="serve this share of name@channel requests with the candidate, e.g. 10%%")
    promote.add_argument("--finish", action="store_true", help="end the running canary: its candidate becomes holder")
    promote.add_argument("--base", default=None, help="base to evaluate on (default: the one in the manifest)")
    promote.add_argument("--json", action="store_true", help="machine-readable output")
    add_registry_option(promote)
    add_threads_option(promote)
    promote.set_defaults(handler=_promote)

    rollback = subparsers.add_parser("rollback", help="end a channel's canary, or move it back to its previous holder")
    rollback.add_argument("name", help="adapter name, e.g. finance")
    rollback.add_argument("--channel", required=True, help="the channel tag, e.g. prod")
    rollback.add_argument("--json", action="store_true", help="machine-readable output")
    add_registry_option(rollback)
    rollback.set_defaults(handler=_rollback)


def add_history_verb(verb: Any) -> None:
    """``adapterhub registry history NAME`` (``verb`` is :mod:`.registry`'s verb maker)."""
    verb("history", history, "every channel move of an adapter (promotions, canaries, rollbacks)",
         ref="adapter name, e.g. finance", json=True)


def _registry(args: argparse.Namespace) -> Any:
    from ..registry.store import Registry

    return Registry(args.registry)


class _LazyEvaluator:
    """Loads the adapter's base and a hub on the first evaluation only (no gate: no model is loaded)."""

    def __init__(self, registry: Any, base: str | None) -> None:
        self.registry, self.base, self.evaluate = registry, base, None

    def __call__(self, ref: str, data: Any) -> dict[str, Any]:
        if self.evaluate is None:
            from ..lifecycle import ServingEvaluator
            from ..runtime.hub import AdapterHub

            manifest = self.registry.get(ref).manifest
            base = self.base or (manifest.get("base") or {}).get("name") or ((manifest.get("recipe") or {})
                                                                            .get("base") or {}).get("model")
            self.evaluate = ServingEvaluator(AdapterHub(base, registry=self.registry) if base else
                                             AdapterHub(registry=self.registry))
        print(f"evaluating {ref} ...", file=sys.stderr, flush=True)
        return self.evaluate(ref, data)


def _promote(args: argparse.Namespace) -> int:
    registry = _registry(args)
    if args.finish:
        result = registry.finish_canary(args.ref.partition("@")[0], channel=args.channel)
    else:
        evaluate = _LazyEvaluator(registry, args.base) if args.gate or args.data else None
        result = registry.promote(args.ref, channel=args.channel, gate=args.gate, data=args.data, canary=args.canary,
                                  evaluate=evaluate)
    return _report(args, result.row)


def _rollback(args: argparse.Namespace) -> int:
    return _report(args, _registry(args).rollback(args.name, channel=args.channel).row)


def _report(args: argparse.Namespace, row: Any) -> int:
    if args.json:
        print_json(row.to_dict())
        return 0
    print(row.describe())
    return 0


def history(args: argparse.Namespace) -> int:
    registry = _registry(args)
    name = args.ref.partition("@")[0]
    rows = registry.history(name)
    if args.json:
        print_json([row.to_dict() for row in rows])
        return 0
    print_table([(row.seq, row.when, row.op, row.channel, _ref(name, row.from_version), _ref(name, row.to_version),
                  _canary(name, row.canary), row.who, "; ".join(check["text"] for check in row.checks) or row.gate,
                  _figures(row.metrics), row.state) for row in rows],
                ["#", "when (UTC)", "op", "channel", "from", "to", "canary", "who", "gate", "metrics", "state"],
                title=f"{name}: channel history")
    return 0


def _ref(name: str, version: int | None) -> str:
    return "-" if version is None else f"{name}@{version}"


def _canary(name: str, canary: dict[str, Any] | None) -> str:
    return f"{name}@{canary['version']} {canary['percent']:g}%" if canary else ""


def _figures(metrics: dict[str, Any]) -> str:
    parts = []
    for side in ("candidate", "holder"):
        found = metrics.get(side) or {}
        shown = [f"{key} {found[key]:.4g}" for key in ("accuracy", "macro_f1", "loss") if key in found]
        if shown:
            parts.append(f"{side}: {', '.join(shown)}")
    for ref, served in (metrics.get("served") or {}).items():
        labels = ", ".join(f"{label} {count}" for label, count in sorted(served.get("labels", {}).items()))
        parts.append(f"{ref} served {served['requests']} ({served['errors']} errors, "
                     f"{served['mean_latency_ms']} ms mean{', ' + labels if labels else ''})")
    return "; ".join(parts)
