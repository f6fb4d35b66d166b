"""Progress bars on stderr for passes over rows (evaluation, the frozen trunk's cache)."""

from __future__ import annotations

import sys
from typing import Any


def row_bar(label: str | None, total: int, *, leave: bool = True) -> Any:
    """A row-counting progress bar on stderr (disabled when ``label`` is ``None``)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=label, unit="row", disable=label is None, leave=leave, dynamic_ncols=True,
                file=sys.stderr)
