"""The rows of one call and how they reach their adapters: :class:`RowRouting`, the ``domains=`` check.

The row-routing primitives every method's layer math reads (:class:`RowSlots`, :data:`BARE`,
:func:`routed`) live with the methods, in :mod:`adapterhub.methods.rows`; they are re-exported here.

>>> RowRouting(layers=RowSlots.build([3, BARE])).layers.slots
(3, -1)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from ..errors import ConfigError
from ..methods.rows import BARE, RowSlots, Segment, active_rows, find_segments, routed
from ..scoring import Routing

__all__ = ["BARE", "UNSET", "RowRouting", "RowSlots", "Segment", "active_rows", "find_segments", "routed", "row_names"]

UNSET: Any = type("Unset", (), {"__repr__": lambda self: "<default domain>"})()
"""``domain=`` left out: the hub's current domain (set by ``switch`` / ``using``) applies."""


def row_names(domains: Sequence[str | None], count: int) -> list[str | None]:
    """Check a ``domains=`` argument: one adapter name (or ``None``) for each of ``count`` rows."""
    if isinstance(domains, str):
        raise ConfigError(f"domains= takes one name per row, got the string {domains!r}; use domain= for all rows")
    names = list(domains)
    if len(names) != count:
        raise ConfigError(f"got {count} inputs but {len(names)} domains; pass one domain per input "
                          "(None for the bare base)")
    return names


@dataclass
class RowRouting(Routing):
    """A call's routing: ``layers`` for every adapter layer (LoRA and other layer methods), ``prefix``
    for rows with a prefix adapter. Built by :func:`adapterhub.runtime.methods.route`."""

    layers: RowSlots | None = None

    def applied(self, rows: Sequence[int] | None = None) -> Any:
        if rows is None or self.layers is None:
            return routed(self.layers)
        return routed(RowSlots.build([self.layers.slots[row] for row in rows], device=self.layers.device))
