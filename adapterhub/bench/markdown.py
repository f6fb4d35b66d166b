"""Markdown pieces the bench's report and its areas' renderers share: tables and formatted numbers.

>>> table(["a", "b"], [[1, None]])
['| a | b |', '|---|---|', '| 1 |  |', '']
>>> format_value(1.05, "×")
'1.05×'
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A markdown table (with a blank line after it) of ``rows`` under ``header``; ``None`` cells stay empty."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join("" if cell is None else str(cell) for cell in row) + " |" for row in rows]
    return [*lines, ""]


def format_value(value: float | None, unit: str = "") -> str:
    """``1.234 ms``, ``1.05×``, ``12,345``; ``–`` for no value."""
    if value is None:
        return "–"
    text = f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{text} {unit}".strip() if unit not in ("×", "") else f"{text}{unit}"


def stats_cell(stats: dict[str, float] | None, key: str = "median") -> str:
    """One statistic (the median by default) of a timing's stats, formatted; ``–`` without stats."""
    return format_value(None if stats is None else stats[key])
