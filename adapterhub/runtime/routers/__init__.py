"""Routers: choose each input's adapter (or a mix, or the bare base) from the text itself.

* :mod:`.features` — pooled hidden states of the resident base (no second model);
* :mod:`.model` — the head and the per-text :class:`RouteDecision`;
* :mod:`.loading` — open a router entry, refuse a stale one;
* :mod:`.build` — :func:`build_router` from each adapter's recipe data, thresholds chosen on validation;
* :mod:`.evaluate` — routing accuracy, confusion matrix, OOD fallback, end-to-end accuracy and cost;
* :mod:`.calls` — ``hub.route`` and ``domain="auto"`` (mixed into :class:`~adapterhub.runtime.AdapterHub`).
"""

from .build import build_router
from .calls import AUTO, RoutingCalls, auto_among
from .model import FALLBACKS, RouteDecision, Router

__all__ = ["AUTO", "FALLBACKS", "RouteDecision", "Router", "RoutingCalls", "auto_among", "build_router"]
