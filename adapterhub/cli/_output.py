"""Shared output helpers: tables for people, JSON for scripts, human sizes."""

from __future__ import annotations

import json
import sys
from typing import Any, Iterable, Sequence


def print_json(data: Any) -> None:
    """Pretty JSON on stdout (for ``--json``)."""
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def print_table(rows: Iterable[Sequence[Any]], columns: Sequence[str], title: str | None = None, *,
                no_wrap: Sequence[str] = ()) -> None:
    """A rich table on stdout; columns named in ``no_wrap`` are never wrapped or cut.

    In a terminal the table fits its width; piped into a file or another program
    (where rich would assume 80 columns) rows stay on one line up to 200 columns.
    """
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, box=box.SIMPLE_HEAD)
    for column in columns:
        table.add_column(column, no_wrap=column in no_wrap, overflow="fold")
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def print_fields(fields: dict[str, Any]) -> None:
    """``key: value`` lines, keys aligned."""
    width = max((len(k) for k in fields), default=0)
    for key, value in fields.items():
        print(f"{key.ljust(width)}  {value}")


def human_bytes(count: float) -> str:
    """``1536 -> '1.5 KiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"
