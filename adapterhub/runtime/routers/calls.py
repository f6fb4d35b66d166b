"""``hub.route(...)`` and ``domain="auto"``: the router chooses each row's adapter (or a mix, or the bare base).

:class:`RoutingCalls` is mixed into :class:`~adapterhub.runtime.AdapterHub`. A row whose domain is
``"auto"`` (every adapter the router knows) or ``"auto:finance,legal"`` (only those) is routed before the
call pins its adapters; the router's feature pass runs the bare base's first ``layer + 1`` blocks over the
raw text (see :mod:`.features`), then the row runs exactly as if it had named the chosen adapter.

>>> hub.use_router("domains", fallback="base")  # doctest: +SKIP
>>> hub.predict(["Shares fell 9%.", "Chest pain on exertion."], domain="auto")  # doctest: +SKIP
['negative', 'cardiology']
>>> hub.route("Shares fell 9%.")[0].choice  # doctest: +SKIP
'finance@1'
"""

from __future__ import annotations

from typing import Any, Sequence

from ... import methods
from ...errors import RoutingError, TaskMismatchError
from ..batch import routed
from .features import features
from .loading import check_current, open_router
from .model import FALLBACKS, RouteDecision, Router

AUTO = "auto"


def auto_among(row: Any) -> tuple[bool, list[str] | None]:
    """``(is it an auto row, the names it restricts to or None)`` for one row's domain.

    >>> auto_among("auto"), auto_among("auto:finance,legal"), auto_among("finance")
    ((True, None), (True, ['finance', 'legal']), (False, None))
    """
    if not isinstance(row, str) or not (row == AUTO or row.startswith(AUTO + ":")):
        return False, None
    names = [name.strip() for name in row[len(AUTO) + 1:].split(",") if name.strip()] if ":" in row else None
    if names is not None and not names:
        raise RoutingError(f"{row!r} names no adapters; write 'auto' or 'auto:finance,legal'")
    return True, names


def mixable(router: Router) -> dict[str, bool]:
    """``{adapter name: whether it can join a weighted mix}`` for ``router``'s adapters (LoRA-family methods)."""
    return {entry["name"]: methods.get(entry["method"]).mixable if entry.get("method") in methods.names() else False
            for entry in router.config["adapters"]}


class RoutingCalls:
    """Routing for :class:`~adapterhub.runtime.AdapterHub` (uses its ``base``, ``registry`` and ``residency``)."""

    def use_router(self, ref: str | Router | None, *, fallback: str = "base") -> Router | None:
        """Make ``ref`` the router ``domain="auto"`` rows use (``None``: none), with its ``fallback``.

        Args:
            ref: a router entry (``"domains"``, ``"domains@2"``) or a loaded :class:`Router`.
            fallback: ``"base"``, ``"mix"`` or ``"error"``: what a row under the router's thresholds gets.

        Raises:
            RoutingError, StaleRouterError, IncompatibleBaseError, AdapterNotFoundError (see :func:`open_router`).
        """
        if fallback not in FALLBACKS:
            raise RoutingError(f"fallback={fallback!r} is not one of {', '.join(FALLBACKS)}")
        self._router = None if ref is None else self._current_router(ref)
        self._router_fallback = fallback
        return self._router

    @property
    def router(self) -> Router | None:
        """The router ``domain="auto"`` uses (set by :meth:`use_router`)."""
        return getattr(self, "_router", None)

    def route(self, texts: str | Sequence[str], *, router: str | Router | None = None, fallback: str | None = None,
              among: Sequence[str] | None = None) -> list[RouteDecision]:
        """Per text: the chosen ref, its probability, the runner-up and the decision (adapter / mix / base).

        Args:
            texts: one text or a list (each non-empty).
            router: a router ref or :class:`Router` (default: the one :meth:`use_router` set).
            fallback: for rows under the thresholds (default: the one :meth:`use_router` set, else ``"base"``).
            among: adapter names the texts may get (default: all the router knows).

        Returns:
            One :class:`RouteDecision` per text (a list also for one text).

        Raises:
            RoutingError: no router, an empty text, a bad fallback or candidate; StaleRouterError.

        >>> [d.label for d in hub.route(["Shares fell.", "Who won the cup final?"], router="domains")]  # doctest: +SKIP
        ['finance@1', 'base']
        """
        items = [texts] if isinstance(texts, str) else list(texts)
        chosen, found = self.route_features(items, router=router)
        if not items:
            return []
        return chosen.decide(found, fallback=fallback or self.router_fallback, among=among, mixable=mixable(chosen))

    @property
    def router_fallback(self) -> str:
        """What rows under the router's thresholds get (set by :meth:`use_router`; default ``"base"``)."""
        return getattr(self, "_router_fallback", "base")

    def route_features(self, texts: Sequence[str], *, router: str | Router | None = None) -> tuple[Router, Any]:
        """``(router, features)``: :meth:`route`'s one forward pass (``[texts, hidden]``, or ``[texts, 2 hidden]``
        for a router whose gate reads the token embeddings too), for callers that decide several groups of rows
        from one pass, each with its own candidates (the server's scheduler, ``auto:a,b`` rows).

        Raises:
            RoutingError: no router, or an empty text; StaleRouterError.
        """
        chosen = self._current_router(router)
        for index, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise RoutingError(f"text {index} is empty (or not a string); routing reads the text, so send some")
        if not texts:
            return chosen, None
        with routed(None):  # the bare base: no adapter touches the router's features
            found = features(self.base.model, self.tokenizer, list(texts), layer=chosen.layer,
                             embedding=chosen.reads_embeddings, device=self.residency.device)
        return chosen, found

    def _current_router(self, router: str | Router | None) -> Router:
        if isinstance(router, Router):
            check_current(self.registry, router)
            return router
        if router is not None:
            return open_router(self.registry, router, base=self.base)
        if self.router is None:
            raise RoutingError("domain='auto' needs a router", fix="call hub.use_router('NAME') first (build one "
                               "with adapterhub.build_router), or pass router= to hub.route",
                               cli_fix="pass --router NAME (build one with adapterhub router build)")
        check_current(self.registry, self.router)
        return self.router

    def resolve_auto_rows(self, rows: list[Any], texts: Sequence[str], *, task: str | None = None) -> list[Any]:
        """``rows`` with every ``"auto"`` / ``"auto:a,b"`` row replaced by what the router chose for its text.

        Args:
            task: the call's name when only an adapter can answer it (``predict``, ``classify``): a text the
                router leaves to the bare base is then one clear error naming the text and why.

        Raises:
            TaskMismatchError: with ``task``, a text the router left to the bare base.
        """
        flags = [auto_among(row) for row in rows]
        wanted = [index for index, (auto, _) in enumerate(flags) if auto]
        if not wanted:
            return rows
        from ..mixing import as_row

        router, found = self.route_features([texts[i] for i in wanted])  # one pass for every auto row
        groups: dict[tuple[str, ...] | None, list[int]] = {}
        for position, index in enumerate(wanted):
            among = flags[index][1]
            groups.setdefault(None if among is None else tuple(among), []).append(position)
        out, table = list(rows), mixable(router)
        for among, positions in groups.items():
            decisions = router.decide(found[positions], fallback=self.router_fallback, among=among, mixable=table)
            for position, decision in zip(positions, decisions):
                index = wanted[position]
                if task and decision.choice is None:
                    raise TaskMismatchError(
                        f"{task} needs an adapter for every text, but the router left text {index} to the bare base "
                        f"({decision.reason or 'its fallback'}; nearest {decision.adapter})",
                        fix="name the adapter for that text, or use_router(..., fallback='mix' or 'error')",
                        cli_fix="pass --domain NAME for that text")
                out[index] = as_row(decision.choice)
        return out
