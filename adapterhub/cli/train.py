"""``adapterhub train``, ``adapterhub recipe check|new`` and ``adapterhub evaluate``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..paths import REGISTRY_DEFAULT
from ._options import add_registry_option, add_threads_option
from ._output import print_fields, print_json, print_table


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train, evaluate and register an adapter from a YAML recipe",
                                  description="Train an adapter from a recipe. Multi-GPU: "
                                              "accelerate launch -m adapterhub train RECIPE")
    train.add_argument("recipe", help="recipe YAML file (see `adapterhub recipe new`)")
    _add_overrides(train)
    train.add_argument("--resume", action="store_true",
                       help="continue the newest run of this recipe (or --run-dir) from its last checkpoint")
    train.add_argument("--run-dir", default=None, help="run folder (default: runs/<name>-<timestamp>)")
    train.add_argument("--register-anyway", action="store_true",
                       help="register a classifier even when it does not beat chance or the bare base by "
                            "output.min_gain (as --set output.register_anyway=true)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--json", action="store_true", help="print the final metrics as JSON")
    add_registry_option(train, help="registry folder to register the adapter in (default: the recipe's "
                                    f"output.registry, else {REGISTRY_DEFAULT})")
    add_threads_option(train)
    train.set_defaults(handler=_train)

    recipe = subparsers.add_parser("recipe", help="check or create training recipes")
    verbs = recipe.add_subparsers(dest="verb", metavar="VERB", required=True)
    check = verbs.add_parser("check", help="validate a recipe and its data without training")
    check.add_argument("recipe", help="recipe YAML file")
    _add_overrides(check)
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.set_defaults(handler=_check)
    new = verbs.add_parser("new", help="write a starter recipe tuned for a task: fill in data paths and labels",
                           description="Write a starter recipe whose settings train well as they are (tuned from "
                                       "the shipped recipes); only the lines marked EDIT need you. The adapter is "
                                       "named after the file.")
    new.add_argument("path", nargs="?", default=None, help="file to write, e.g. support.yaml (default: stdout)")
    new.add_argument("--task", default="classification", metavar="TASK",
                     help="classification (text -> label, default), instruction, chat or ner (entity spans)")
    new.add_argument("--force", action="store_true", help="overwrite an existing file")
    new.add_argument("--all-keys", action="store_true",
                     help="instead: the reference recipe listing every key with its default and description")
    new.add_argument("--method", default=None, help="with --all-keys: the adapter method whose options it lists "
                                                     "(default: lora; see README: Adapter methods)")
    new.set_defaults(handler=_new)

    evaluate = subparsers.add_parser("evaluate", help="score a registered adapter (or the bare base) on a data file")
    evaluate.add_argument("ref", help="adapter reference: name, name@3, name@latest, name@tag")
    evaluate.add_argument("--data", required=True, help=".jsonl/.csv/.parquet rows in the adapter's recipe format")
    evaluate.add_argument("--no-adapter", action="store_true",
                          help="score the bare base zero-shot with the adapter's prompt (baseline)")
    evaluate.add_argument("--base", default=None, help="base model (default: the one in the adapter's manifest)")
    evaluate.add_argument("--quantize", choices=("nf4", "fp4", "int8"), default=None,
                          help="score on that base loaded quantised (bitsandbytes), e.g. an fp32-trained adapter "
                               "served on the 4-bit base")
    evaluate.add_argument("--errors", action="store_true",
                          help="classifiers: list the misclassified rows with each label's probability")
    evaluate.add_argument("--confusion-png", default=None, metavar="FILE",
                          help="classifiers: also save the confusion matrix as a PNG")
    evaluate.add_argument("--batch-size", type=int, default=32)
    add_registry_option(evaluate)
    evaluate.add_argument("--json", action="store_true", help="machine-readable output")
    evaluate.add_argument("--record-contract", action="store_true",
                          help="record the scores in the adapter's contract (evaluated_on, under --quantize) as a "
                               "new version")
    add_threads_option(evaluate)
    evaluate.set_defaults(handler=_evaluate)


def _add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key, e.g. --set training.lr=1e-4 (repeatable)")


def _train(args: argparse.Namespace) -> int:
    from ..training import train

    overrides = [*args.overrides, *(["output.register_anyway=true"] if args.register_anyway else [])]
    result = train(args.recipe, overrides=overrides, resume=args.resume, run_dir=args.run_dir,
                   registry=_registry(args), progress=not args.no_progress)
    if not _is_main_process():
        return 0  # under accelerate launch / torchrun only rank 0 reports
    record, run_dir, metrics = result.record, result.run_dir, result.metrics
    if args.json:
        print_json({"ref": record.ref if record else None, "run_dir": str(run_dir), "metrics": metrics})
        return 0
    fields: dict[str, Any] = {"registered": record.ref if record else "no (output.register_on_success: false)",
                              "run dir": run_dir}
    for split in ("validation", "test"):
        if split in metrics:
            fields[split] = _summary(metrics[split])
    for split, values in (metrics.get("base") or {}).items():
        fields[f"bare base, {split}"] = _summary(values)
    train_info = metrics.get("train", {})
    fields["training"] = (f"{train_info.get('steps')} steps, {train_info.get('tokens_per_second')} tokens/s, "
                          f"{train_info.get('seconds')} s")
    print_fields(fields)
    return 0


def _registry(args: argparse.Namespace) -> Any:
    """The registry ``--registry`` names (``None``: the library's default)."""
    from ..registry import Registry

    return Registry(args.registry) if args.registry is not None else None


def _is_main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


def _summary(metrics: dict[str, Any]) -> str:
    parts = []
    if "accuracy" in metrics:
        parts.append(f"accuracy {metrics['accuracy']:.1%}, macro-F1 {metrics['macro_f1']:.3f}")
    if "per_type" in metrics:  # NER: entity-level, exact spans
        parts.append(f"entity F1 {metrics['f1']:.3f} (precision {metrics['precision']:.3f}, recall "
                     f"{metrics['recall']:.3f}, {metrics['support']} entities)")
    if "json_valid" in metrics:  # answers generated under the response schema
        fields = ", ".join(f"{key.removesuffix('_accuracy')} {value:.1%}" for key, value in metrics.items()
                           if key.endswith("_accuracy"))
        parts.append(f"JSON valid {metrics['json_valid']:.1%}, exact match {metrics['exact_match']:.1%} ({fields})")
    if "loss" in metrics:
        parts.append(f"loss {metrics['loss']:.4f}" + (f", perplexity {metrics['perplexity']:.3f}"
                                                      if "perplexity" in metrics else ""))
    return "; ".join(parts) + (f" ({metrics['count']} rows)" if "count" in metrics else "")


def _print_entity_errors(metrics: dict[str, Any]) -> None:
    overlap, errors = metrics["overlap"], metrics["errors"]
    rows = [(kind, f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}",
             f"{overlap['per_type'][kind]['f1']:.3f}", row["support"],
             " ".join(f"{n}" for n in (errors["per_type"].get(kind) or dict.fromkeys(errors["counts"], 0)).values()))
            for kind, row in metrics["per_type"].items()]
    rows.append(("all (micro)", f"{metrics['precision']:.3f}", f"{metrics['recall']:.3f}", f"{metrics['f1']:.3f}",
                 f"{overlap['f1']:.3f}", metrics["support"], " ".join(str(n) for n in errors["counts"].values())))
    print_table(rows, ["type", "precision", "recall", "exact F1", "overlap F1", "support",
                       "errors: " + " / ".join(errors["counts"])])
    if "argmax_decode" in metrics:
        plain = metrics["argmax_decode"]
        print(f"without the BIO repair (per-word argmax): exact F1 {plain['f1']:.3f} "
              f"(precision {plain['precision']:.3f}, recall {plain['recall']:.3f})")


def _check(args: argparse.Namespace) -> int:
    from ..training.dry_run import check_recipe

    summary = check_recipe(args.recipe, overrides=args.overrides)
    if args.json:
        print_json(summary)
        return 0
    print(f"{args.recipe}: ok{' (with warnings below)' if summary['warnings'] else ''} — {summary['task']} with {summary['method']} on {summary['base']}, "
          f"{summary['steps_per_epoch']} steps/epoch, {summary['total_steps']} steps in all")
    splits = [(name, entry) for name in ("train", "validation", "test") if (entry := summary.get(name))]
    print_table([(name, entry["rows"], entry["tokens"], entry["longest"], _label_counts(entry.get("labels", {})))
                 for name, entry in splits], ["split", "rows", "tokens", "longest", "rows per label"])
    for name, entry in splits:
        print(f"{name}: {entry['origin']}")
    for warning in summary["warnings"]:
        print(f"warning: {warning}")
    return 0


def _label_counts(counts: dict[str, int]) -> str:
    if counts and len(set(counts.values())) == 1:
        return f"{next(iter(counts.values()))} each of {len(counts)}"
    return ", ".join(f"{label} {count}" for label, count in counts.items())


def _new(args: argparse.Namespace) -> int:
    from ..errors import RecipeError
    from ..training.recipe_files import starter_yaml
    from ..training.starters import TASKS, starter_name, starter_recipe

    file = args.path or "recipe.yaml"
    if args.task not in TASKS:
        raise RecipeError(f"unknown --task {args.task!r}; use one of {', '.join(TASKS)}")
    if args.all_keys or args.method:
        text = starter_yaml(args.method).replace("THIS_FILE", file)
    else:
        text = starter_recipe(args.task, name=starter_name(args.path), file=file)
    if args.path is None:
        print(text, end="")
        return 0
    path = Path(args.path)
    if path.exists() and not args.force:
        raise RecipeError(f"{path} already exists; pass --force to overwrite it or choose another path")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}; fill in the lines marked EDIT (data paths, labels), then: adapterhub recipe check {path}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from ..base.loading import load_base
    from ..training.evaluate import evaluate_file

    if args.record_contract and args.no_adapter:
        raise ConfigError("--record-contract records the adapter's own scores; drop --no-adapter")
    base = load_base(args.base, quantize=args.quantize) if args.base else None
    registry = _registry(args)
    metrics = evaluate_file(args.ref, args.data, registry=registry, base=base, adapter=not args.no_adapter,
                            batch_size=args.batch_size, progress=True, quantize=args.quantize, errors=args.errors)
    if args.confusion_png and "confusion" in metrics:
        from ..training.encoder_metrics import plot_confusion

        plot_confusion(Path(args.confusion_png), metrics["confusion"], title=f"{metrics['ref']} on {Path(args.data).name}")
    if args.record_contract:
        from ..registry import Registry
        from ..registry.contract import record_evaluation

        metrics["recorded_as"] = record_evaluation(registry if registry is not None else Registry(), metrics["ref"],
                                                   metrics, metrics["quantize"]).ref
    if args.json:
        print_json(metrics)
        return 0
    who = metrics["ref"] if metrics["adapter"] else f"bare base with {metrics['ref']}'s prompt"
    served = f" (base loaded {metrics['quantize']})" if metrics.get("quantize") else ""
    print(f"{who} on {metrics['data']}{served}: {_summary(metrics)}")
    if "recorded_as" in metrics:
        print(f"recorded in the contract (evaluated_on {metrics['quantize'] or 'none'}) as {metrics['recorded_as']}")
    per_label = metrics.get("per_label") or metrics.get("per_type")
    if "overlap" in metrics:  # NER: exact spans, partial matches and the kinds of error
        _print_entity_errors(metrics)
    elif per_label:  # encoder adapters: the classification report (or the entity report per type)
        print_table([(label, f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", row["support"])
                     for label, row in per_label.items()], ["label", "precision", "recall", "F1", "support"])
    elif isinstance(metrics.get("f1"), dict):
        print_table([(label, f"{f1:.3f}") for label, f1 in metrics["f1"].items()], ["label", "F1"])
    print_confusion(metrics.get("confusion"))
    if args.errors and "errors" in metrics:
        print_errors(metrics["errors"])
    if args.confusion_png and "confusion" in metrics:
        print(f"confusion matrix: {args.confusion_png}")
    return 0


def print_confusion(confusion: dict[str, Any] | None) -> None:
    """The confusion matrix as a table: one row per true label, one column per predicted label."""
    if not confusion:
        return
    labels = confusion["labels"]
    print_table([(label, *row) for label, row in zip(labels, confusion["matrix"])], ["true (rows) / predicted", *labels],
                title="confusion matrix")


def print_errors(errors: list[dict[str, Any]]) -> None:
    """The misclassified rows, most confident mistakes first, with every label's probability."""
    if not errors:
        print("no misclassified rows")
        return
    print_table([(item["row"], item["text"], item["label"], item["predicted"],
                  ", ".join(f"{label} {p:.2f}" for label, p in item["probabilities"].items()))
                 for item in errors], ["row", "text", "label", "predicted", "probabilities"],
                title=f"{len(errors)} misclassified row(s)")
