"""``adapterhub cache [list]`` and ``adapterhub cache clean KIND...``: what adapterhub keeps on disk."""

from __future__ import annotations

import argparse

from ._output import human_bytes, print_json, print_table


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..paths import CLEANABLE

    parser = subparsers.add_parser("cache", help="show (and clean) the base models, downloads, bench files and "
                                                 "run folders adapterhub keeps on disk")
    parser.set_defaults(handler=_list, json=False)
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    listing = verbs.add_parser("list", help="sizes of everything kept on disk (the default)")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(handler=_list)
    clean = verbs.add_parser("clean", help="remove what can be made again (registries are never removed here)")
    clean.add_argument("kinds", nargs="+", choices=[*CLEANABLE, "all"], metavar="KIND",
                       help=f"one or more of {', '.join(CLEANABLE)}, or all")
    clean.set_defaults(handler=_clean)


def _list(args: argparse.Namespace) -> int:
    from ..paths import cache_usage, home

    entries = cache_usage()
    if args.json:
        print_json([{"kind": e.kind, "path": str(e.path), "bytes": e.bytes, "cleanable": e.cleanable, "note": e.note}
                    for e in entries])
        return 0
    if not entries:
        print(f"nothing stored yet under {home()}")
        return 0
    print_table([(e.kind, e.path, human_bytes(e.bytes), e.note) for e in entries], ["kind", "path", "size", "what"],
                title=f"adapterhub on disk ($ADAPTERHUB_HOME = {home()})", no_wrap=("kind", "size"))
    total = sum(e.bytes for e in entries)
    freeable = sum(e.bytes for e in entries if e.cleanable)
    print(f"total {human_bytes(total)}; `adapterhub cache clean KIND...` can free {human_bytes(freeable)}")
    return 0


def _clean(args: argparse.Namespace) -> int:
    from ..paths import CLEANABLE, clean_cache

    kinds = CLEANABLE if "all" in args.kinds else args.kinds
    removed = clean_cache(kinds)
    for entry in removed:
        print(f"removed {entry.path} ({human_bytes(entry.bytes)})")
    print(f"freed {human_bytes(sum(e.bytes for e in removed))}" if removed else f"nothing to remove for {', '.join(kinds)}")
    return 0
