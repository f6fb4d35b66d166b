"""``adapterhub registry list|show|import|rm|tag|verify|export|gc``: thin calls into :class:`Registry`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._output import human_bytes, print_fields, print_json, print_table

LIST_COLUMNS = ("ref", "domain", "method", "task", "tags", "base", "created")


def register(subparsers: argparse._SubParsersAction) -> None:
    root_help = ("registry folder (default: $ADAPTERHUB_REGISTRY, else the checkout's registry/, "
                 "else $ADAPTERHUB_HOME/registry)")
    parser = subparsers.add_parser("registry", help="list, import, verify and export registered adapters")
    parser.add_argument("--root", default=None, help=root_help)
    # --root is also accepted after the verb; SUPPRESS keeps the group's value when it is not repeated there
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", default=argparse.SUPPRESS, help=root_help)
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
    listing.add_argument("--domain", default=None, help="only this domain")
    listing.add_argument("--base", default=None, metavar="FINGERPRINT", help="only adapters made for this base")

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

    export = verb("export", _export, "write a verified plain PEFT copy to a folder", ref=any_ref)
    export.add_argument("dir", help="new or empty folder")

    verb("gc", _gc, "remove leftovers of interrupted writes")


def _registry(args: argparse.Namespace) -> Any:
    from ..registry.store import Registry

    return Registry(args.root)


def _task_label(task: dict[str, Any]) -> str:
    labels = task.get("labels") or []
    return f"{task.get('type')} ({len(labels)} labels)" if labels else str(task.get("type"))


def _short_base(fingerprint: str | None) -> str | None:
    """``llama-30L-576h-49152v-8a6518d10d79b728`` -> ``llama-30L-576h-49152v-8a6518d1``: enough to tell bases apart."""
    return fingerprint[:-8] if fingerprint and len(fingerprint) > 30 else fingerprint


def _list(args: argparse.Namespace) -> int:
    registry = _registry(args)
    records = registry.list(domain=args.domain, base=args.base)
    if args.json:
        print_json([record.to_dict() for record in records])
    elif not records:
        print(f"no adapters in {registry.root}; add one with `adapterhub registry import DIR --name NAME`")
    else:
        rows = [(r.ref, r.domain, r.method, _task_label(r.manifest["task"]), ",".join(r.tags),
                 _short_base(r.base_fingerprint or r.manifest["base"].get("name")), r.created[:16].replace("T", " "))
                for r in records]
        print_table(rows, LIST_COLUMNS, title=f"registry {registry.root} (details: adapterhub registry show REF)",
                    no_wrap=LIST_COLUMNS)
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
        "metrics": ", ".join(_metric(k, v) for k, v in manifest["metrics"].items()) or "-",
        **{f"file {name}": f"{human_bytes(entry['size'])} sha256 {entry['sha256'][:16]}…"
           for name, entry in manifest["files"].items()},
    })
    return 0


def _metric(key: str, value: Any) -> str:
    """``key=value``; a merge's report as each parent's kept share of its validation accuracy."""
    if key == "merge" and isinstance(value, list):
        kept = [f"{row['ref']} keeps {100 * row['kept']:.1f}% ({100 * row['parent_accuracy']:.1f}% -> "
                f"{100 * row['merged_accuracy']:.1f}%)" for row in value if row.get("kept") is not None]
        return "merge: " + ("; ".join(kept) or "not evaluated")
    return f"{key}={value}"


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
    checked = 1 if args.ref else len(registry.list())
    problems = registry.verify(args.ref, progress=sys.stderr.isatty())
    if args.json:
        print_json({"checked": checked, "problems": problems})
    else:
        for problem in problems:
            print(f"problem: {problem}")
        print(f"{checked} entr{'y' if checked == 1 else 'ies'} checked, {len(problems)} problem(s)")
    return 1 if problems else 0


def _export(args: argparse.Namespace) -> int:
    registry = _registry(args)
    record = registry.get(args.ref)
    path = registry.export(record.ref, args.dir)
    print(f"exported {record.ref} to {path}")
    return 0


def _gc(args: argparse.Namespace) -> int:
    removed = _registry(args).gc()
    for path in removed:
        print(f"removed {path}")
    print(f"{len(removed)} leftover(s) removed")
    return 0
