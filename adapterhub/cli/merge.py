"""``adapterhub merge REF REF... --how ... --name NAME``: a thin call into :func:`adapterhub.training.merge_adapters`."""

from __future__ import annotations

import argparse

from ._options import add_registry_option
from ._output import print_fields, print_json, print_table


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..training.merge import HOWS

    merge = subparsers.add_parser(
        "merge", help="merge LoRA adapters into a new registry version (with lineage and kept accuracy)",
        description="Merge registered LoRA adapters with PEFT's add_weighted_adapter, register the result as NAME "
                    "with its parents, weights and method in the manifest, and report how much of each "
                    "classification parent's validation accuracy the merge keeps.")
    merge.add_argument("refs", nargs="+", metavar="REF", help="two or more adapters: name, name@N or name@tag")
    merge.add_argument("--name", required=True, help="registry name of the merged adapter")
    merge.add_argument("--weights", nargs="+", type=float, default=None, metavar="W",
                       help="one weight per adapter (default 1.0 each)")
    merge.add_argument("--how", choices=HOWS, default="cat", help="PEFT combination type (default: cat)")
    merge.add_argument("--density", type=float, default=None,
                       help="share of values ties/dare_* keep (default 0.5 for those)")
    add_registry_option(merge)
    merge.add_argument("--base", default=None, help="base model (default: the one the adapters name)")
    merge.add_argument("--domain", default=None, help="domain of the merge (default: the first adapter's)")
    merge.add_argument("--description", default="", help="one line for people")
    merge.add_argument("--no-eval", action="store_true", help="skip scoring the parents' validation data")
    merge.add_argument("--json", action="store_true", help="machine-readable output")
    merge.set_defaults(handler=_merge)


def _merge(args: argparse.Namespace) -> int:
    from ..registry import Registry
    from ..registry.manifest import lineage
    from ..training.merge import merge_adapters

    base = None
    if args.base is not None:
        from ..base.loading import load_base

        base = load_base(args.base)
    result = merge_adapters(args.refs, name=args.name, weights=args.weights, how=args.how, density=args.density,
                            registry=Registry(args.registry), base=base, domain=args.domain,
                            description=args.description, evaluate=not args.no_eval)
    if args.json:
        print_json({"record": result.record.to_dict(), "report": result.report})
        return 0
    print_fields({"ref": result.record.ref, "lineage": lineage(result.record.manifest)})
    rows = [(row["ref"], row.get("rows", "-"), _pct(row.get("parent_accuracy")), _pct(row.get("merged_accuracy")),
             _pct(row.get("kept")) if row.get("kept") is not None else row.get("skipped", "-"))
            for row in result.report]
    if rows:
        print_table(rows, ("parent", "validation rows", "parent accuracy", "merged accuracy", "kept"),
                    title="validation accuracy, parent alone vs the merge")
    return 0


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"
