"""The served methods of one base, and the routing of one call over them.

Each method's serving half lives in its own folder (``adapterhub/methods/<name>/serving.py``);
:func:`build_methods` asks the method registry for all of them, bound to a base, and
:func:`route` turns a call's per-row ``(method, slot)`` into the :class:`RowRouting` its
forward passes apply.

>>> sorted(build_methods(base))  # doctest: +SKIP
['adalora', 'bottleneck', 'ia3', 'lora', 'loha', 'prefix']
"""

from __future__ import annotations

from typing import Any, Sequence

from ... import methods as registry
from ...methods.serving import AdapterMethod
from ..batch import BARE, RowRouting, RowSlots

__all__ = ["AdapterMethod", "build_methods", "route"]


def build_methods(base: Any) -> dict[str, AdapterMethod]:
    """One served instance of every registered method, bound to ``base`` (an :class:`adapterhub.base.Base`)."""
    return registry.build_serving(base)


def route(methods: dict[str, AdapterMethod], rows: Sequence[tuple[str, int] | None], *, repeat: int = 1,
          device: Any = "cpu") -> RowRouting:
    """The routing of one call whose rows use ``(method, slot)`` (``None``: the bare base).

    Layer methods share one :class:`RowSlots` (slots are unique across methods, and a
    layer skips slots it does not hold); the prefix method fills the cache.
    """
    layer_slots = [BARE if row is None or methods[row[0]].routes != "layers" else row[1] for row in rows]
    layers = RowSlots.build(layer_slots, device=device) if any(s != BARE for s in layer_slots) else None
    prefix = None
    for method in methods.values():
        if method.routes == "prefix":
            slots = [BARE if row is None or row[0] != method.name else row[1] for row in rows]
            if any(s != BARE for s in slots):
                prefix = method.batch(slots, repeat=repeat)
    return RowRouting(prefix=prefix, layers=layers, adapter=("rows", rows[0]) if len(set(rows)) == 1 else None)
