"""``adapterhub registry list|show|import|rm|tag|verify|export|set-contract|gc|rebuild-index|history``: thin calls into
:class:`Registry`."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from ._options import add_registry_option
from .contract import add_contract_options, print_contract, set_contract_from_args
from .lifecycle import add_history_verb
from ._output import human_bytes, print_fields, print_json, print_table

LIST_COLUMNS = ("ref", "domain", "method", "task", "metric", "tags", "base", "created")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("registry", help="list, import, verify and export registered adapters")
    add_registry_option(parser)
    # --registry is also accepted after the verb; SUPPRESS keeps the group's value when it is not repeated there
    common = argparse.ArgumentParser(add_help=False)
    add_registry_option(common, default=argparse.SUPPRESS)
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    def verb(name: str, handler: Any, help: str, *, ref: str | None = None,
             json: bool = False) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=help, parents=[common])
        sub.set_defaults(handler=handler)
        if ref is not None:
            sub.add_argument("ref", help=ref)
        if json:
            sub.add_argument("--json", action="store_true", help="machine-readable output")
        return sub

    any_ref = "name, name@N, name@latest or name@tag"
    listing = verb("list", _list, "registered adapters, one row per version", json=True)
    listing.add_argument("--name", default=None, metavar="PREFIX", dest="name_prefix",
                         help="only names starting with PREFIX (case-sensitive)")
    listing.add_argument("--domain", default=None, help="only this domain")
    listing.add_argument("--tag", default=None, help="only the version this tag or channel points at, e.g. prod")
    listing.add_argument("--base", default=None, metavar="FINGERPRINT",
                         help="only adapters made for this base (a fingerprint or its leading part, as listed)")
    listing.add_argument("--method", default=None, help="only this method, e.g. lora")
    listing.add_argument("--limit", type=int, default=None, help="at most this many rows (default: all)")
    listing.add_argument("--offset", type=int, default=0, help="skip this many matching rows first (paging)")

    verb("show", _show, "one entry's manifest", ref=any_ref, json=True)

    imports = verb("import", _import, "store a PEFT adapter directory as a new version")
    imports.add_argument("dir", help="folder with adapter_config.json and adapter_model.safetensors")
    imports.add_argument("--name", required=True, help="adapter name, e.g. legal")
    imports.add_argument("--domain", default=None, help="domain label, e.g. legal")
    imports.add_argument("--tag", action="append", default=[], help="tag to point at the new version (repeatable)")
    imports.add_argument("--description", default="", help="one line for people")

    remove = verb("rm", _rm, "remove a version (or every version with --all)", ref=any_ref)
    remove.add_argument("--all", action="store_true", help="remove every version of the name")

    tag = verb("tag", _tag, "point name@TAG at a version", ref="the version to tag, e.g. legal@3")
    tag.add_argument("tag", help="tag name, e.g. prod")

    verify = verb("verify", _verify, "check every file against its sha256 (exit 1 on problems)", json=True)
    verify.add_argument("ref", nargs="?", default=None, help="only this entry (default: all)")

    export = verb("export", _export, "write a verified plain PEFT copy to share: model card, base id, "
                                     "label_scoring.py", ref=any_ref)
    export.add_argument("dir", help="new or empty folder")
    export.add_argument("--base-id", default=None, metavar="ORG/NAME",
                        help="the base's public id to write (default: the embedded base's Hub id, or the one "
                             "the adapter names)")
    export.add_argument("--repo-id", default=None, metavar="ORG/NAME", help="where it will live on the Hub, for "
                                                                          "the model card's usage lines")

    contract = verb("set-contract", _set_contract, "record a serving contract as a new version (same files)",
                    ref=any_ref, json=True)
    add_contract_options(contract)

    verb("gc", _gc, "remove leftovers of interrupted writes")

    verb("rebuild-index", _rebuild_index, "index every verifying version folder again (after losing index.sqlite)",
         json=True)
    add_history_verb(verb)


def _registry(args: argparse.Namespace) -> Any:
    from ..registry.store import Registry

    return Registry(args.registry)


def _task_label(task: dict[str, Any]) -> str:
    labels = task.get("labels") or []
    return f"{task.get('type')} ({len(labels)} labels)" if labels else str(task.get("type"))


def _short_base(fingerprint: str | None) -> str | None:
    """``llama-30L-576h-49152v-8a6518d10d79b728`` -> ``llama-30L-576h-49152v-8a6518d1``: enough to tell bases apart."""
    return fingerprint[:-8] if fingerprint and len(fingerprint) > 30 else fingerprint


def _list(args: argparse.Namespace) -> int:
    from ..registry.listing import ListQuery

    registry = _registry(args)
    filters = {"name_prefix": args.name_prefix, "domain": args.domain, "tag": args.tag, "base": args.base,
               "method": args.method}
    query = ListQuery(**filters, limit=args.limit, offset=args.offset)  # checks every filter before reading
    records = registry.list(**filters, limit=args.limit, offset=args.offset)
    if args.json:
        print_json([record.to_dict() for record in records])
        return 0
    total = registry.count(**filters) if (records or args.offset) else 0
    matching = f" matching {query.describe()}" if query.describe() else ""
    if not records:
        print(f"no adapters{matching} in {registry.root}" + (f" past offset {args.offset} ({total} in all)"
                                                              if args.offset else "")
              + ("" if matching or args.offset else "; add one with `adapterhub registry import DIR --name NAME`"))
        return 0
    from ..registry.headline import headline_metric

    rows = [(r.ref, r.domain, r.method, _task_label(r.manifest["task"]),
             headline_metric(r.manifest.get("metrics")) or "-", ",".join(r.tags),
             _short_base(r.base_fingerprint or r.manifest["base"].get("name")), r.created[:16].replace("T", " "))
            for r in records]
    print_table(rows, LIST_COLUMNS, title=f"registry {registry.root} (details: adapterhub registry show REF)",
                no_wrap=LIST_COLUMNS)
    shown = f"{args.offset + 1}-{args.offset + len(records)}"
    more = (f"; next page: --offset {args.offset + len(records)}" if args.offset + len(records) < total else "")
    print(f"{shown} of {total} entr{'y' if total == 1 else 'ies'}{matching}{more}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from ..registry.manifest import lineage

    record = _registry(args).get(args.ref)
    if args.json:
        print_json(record.to_dict())
        return 0
    manifest = record.manifest
    task = manifest["task"]
    print_fields({
        "ref": record.ref, "path": record.path, "domain": record.domain, "method": record.method,
        "task": _task_label(task) + (f": {', '.join(task['labels'])}" if task.get("labels") else ""),
        "base": f"{manifest['base'].get('name')} ({record.base_fingerprint or 'fingerprint not recorded'})",
        "source": lineage(manifest) or ", ".join(f"{k}={v}" for k, v in manifest["source"].items()),
        "tags": ", ".join(record.tags) or "-", "created": record.created,
        "description": record.description or "-",
        **{f"file {name}": f"{human_bytes(entry['size'])} sha256 {entry['sha256'][:16]}…"
           for name, entry in manifest["files"].items()},
    })
    _print_metrics(manifest.get("metrics") or {}, labels=task.get("labels") or ())
    print_contract(manifest)
    return 0


_SCORES = (("rows", "count", "{}"), ("accuracy", "accuracy", "{:.1%}"), ("macro-F1", "macro_f1", "{:.3f}"),
           ("loss", "loss", "{:.4f}"), ("perplexity", "perplexity", "{:.3f}"))


def _print_metrics(metrics: dict[str, Any], *, labels: Sequence[str] = ()) -> None:
    """Scores per split (and the bare base's), per-label F1 (in ``labels`` order) and the training run, as tables.

    Metrics of another shape (an imported or pulled adapter's) print as ``key  value`` lines.
    """
    base = metrics.get("base") if isinstance(metrics.get("base"), dict) else {}
    splits = {name: metrics[name] for name in ("validation", "test") if isinstance(metrics.get(name), dict)}
    splits |= {f"bare base, {name}": base[name] for name in ("validation", "test") if isinstance(base.get(name), dict)}
    rest = {key: value for key, value in metrics.items() if key not in ("validation", "test", "base", "train")}
    if not metrics:
        print("metrics   -")
        return
    if splits:
        columns = [(title, key, form) for title, key, form in _SCORES if any(key in v for v in splits.values())]
        print_table([(name, *(_cell(values.get(key), form) for _, key, form in columns))
                     for name, values in splits.items()], ["split", *(title for title, _, _ in columns)],
                    title="metrics")
        with_f1 = {name: values["f1"] for name, values in splits.items() if isinstance(values.get("f1"), dict)}
        labels = list(dict.fromkeys([*labels, *(label for f1 in with_f1.values() for label in f1)]))
        if labels:
            print_table([(label, *(_cell(f1.get(label), "{:.3f}") for f1 in with_f1.values())) for label in labels],
                        ["label", *(f"F1 {name}" for name in with_f1)], title="per-label F1")
    train = metrics.get("train")
    if isinstance(train, dict):
        print(f"training: {train.get('steps')} steps ({train.get('epochs')} epochs), best at step "
              f"{train.get('best_step')}, {train.get('tokens_per_second')} tokens/s, {train.get('seconds')} s")
    if "merge" in rest:  # a merged adapter: how much of each parent's accuracy it kept
        print(f"merge: {_merge_report(rest.pop('merge'))}")
    if rest:
        print_fields({f"metric {key}": value for key, value in rest.items()})


def _cell(value: Any, form: str) -> str:
    if value is None:
        return "-"
    try:
        return form.format(value)
    except (TypeError, ValueError):
        return str(value)
def _merge_report(value: Any) -> str:
    """Each parent's kept share of its validation accuracy (``a@1 keeps 97.0% (90.0% -> 87.3%)``)."""
    if not isinstance(value, list):
        return str(value)
    kept = [f"{row['ref']} keeps {100 * row['kept']:.1f}% ({100 * row['parent_accuracy']:.1f}% -> "
            f"{100 * row['merged_accuracy']:.1f}%)" for row in value if row.get("kept") is not None]
    return "; ".join(kept) or "not evaluated"


def _set_contract(args: argparse.Namespace) -> int:
    record = set_contract_from_args(_registry(args), args)
    if args.json:
        print_json(record.to_dict())
    else:
        print(f"{record.ref}: the contract of {args.ref} recorded as a new version (move a tag to it to serve it "
              f"there: adapterhub registry tag {record.ref} prod)")
        print_contract(record.manifest)
    return 0


def _import(args: argparse.Namespace) -> int:
    record = _registry(args).add(args.dir, args.name, domain=args.domain, tags=args.tag, description=args.description)
    size = sum(entry["size"] for entry in record.manifest["files"].values())
    print(f"imported {args.dir} as {record.ref} ({record.method}, {human_bytes(size)})")
    return 0


def _rm(args: argparse.Namespace) -> int:
    for record in _registry(args).remove(args.ref, all_versions=args.all):
        print(f"removed {record.ref}")
    return 0


def _tag(args: argparse.Namespace) -> int:
    record = _registry(args).tag(args.ref, args.tag)
    print(f"{record.name}@{args.tag} -> {record.ref}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    registry = _registry(args)
    checked = 1 if args.ref else registry.count()
    problems = registry.verify(args.ref, progress=sys.stderr.isatty())
    if args.json:
        print_json({"checked": checked, "problems": problems})
    else:
        for problem in problems:
            print(f"problem: {problem}")
        print(f"{checked} entr{'y' if checked == 1 else 'ies'} checked, {len(problems)} problem(s)")
        if problems:
            print("a damaged entry: remove it with `adapterhub registry rm REF` and import the adapter again")
    return 1 if problems else 0


def _export(args: argparse.Namespace) -> int:
    from ..hf.export import export_adapter

    registry = _registry(args)
    record = registry.get(args.ref)
    done = export_adapter(record.ref, args.dir, registry=registry, base_id=args.base_id, repo_id=args.repo_id)
    print(f"exported {record.ref} to {done.path}: {', '.join(done.files)}")
    if done.base_id is None:
        print(f"note: no public id is known for its base {record.manifest['base'].get('name')!r}; "
              "adapter_config.json keeps the local path: pass --base-id ORG/NAME", file=sys.stderr)
    return 0


def _gc(args: argparse.Namespace) -> int:
    removed = _registry(args).gc()
    for path in removed:
        print(f"removed {path}")
    print(f"{len(removed)} leftover(s) removed")
    return 0


def _rebuild_index(args: argparse.Namespace) -> int:
    report = _registry(args).rebuild_index()
    if args.json:
        print_json(report.to_dict())
    else:
        for problem in report.problems:
            print(f"problem: {problem}")
        tags = f", {len(report.tags)} tag(s)" if report.tags else ""
        print(f"indexed {len(report.indexed)} entr{'y' if len(report.indexed) == 1 else 'ies'}{tags}; "
              f"{len(report.problems)} folder(s) left out")
    return 1 if report.problems else 0
