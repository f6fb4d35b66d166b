"""``model="auto"`` on the HTTP routes: the hub's router picks the adapter (or a mix, or the bare base) per request.

``"auto"`` lets the router choose among every adapter it knows, ``"auto:finance,legal"`` among those only; a key's
allow list narrows the choice further (a key allowed only ``finance`` never gets ``legal`` through ``auto``).
What served the request goes back in the ``X-Adapterhub-Served-By`` header, the OpenAI answer's ``model`` field
and LoRAX's ``details.adapter_id``; ``/metrics`` counts decisions per adapter (``adapterhub_route_decisions``).

The router's feature pass (the base's first blocks over the raw text, see
:mod:`adapterhub.runtime.routers.features`) runs in the scheduler's step, one pass for every request that
asked since the last step (:func:`decide_each`); then the request joins the batch under the adapter chosen.

>>> ref, decision = await choose(engine, None, "auto", "Shares fell 9% after the profit warning.")  # doctest: +SKIP
>>> ref, decision.decision  # doctest: +SKIP
('finance@1', 'adapter')
"""

from __future__ import annotations

from typing import Any

from ..runtime.routers import RouteDecision, auto_among
from ..runtime.routers.calls import mixable
from .protocol import ServeError

SERVED_BY_HEADER = "X-Adapterhub-Served-By"


def is_auto(model: str) -> bool:
    """Whether a request's ``model`` asks the router (``auto`` or ``auto:a,b``)."""
    return auto_among(model)[0]


def routed_text(text: str | None = None, messages: list[dict[str, Any]] | None = None) -> str:
    """What the router reads: the prompt, or a chat's user turns joined (a system prompt says little of the domain)."""
    if messages is None:
        return text or ""
    turns = [m.get("content") for m in messages if m.get("role") == "user" and isinstance(m.get("content"), str)]
    return "\n".join(turns)


async def choose(engine: Any, key: Any, model: str, text: str) -> tuple[str | None, RouteDecision]:
    """The adapter reference (a mix string, or ``None`` for the bare base) ``auto`` picks for ``text``.

    Awaits the scheduler's next routing pass without holding a worker thread (a burst of ``auto`` requests
    leaves the threadpool to the others).

    Raises:
        ServeError: 400 no router on this server, or an empty text; 403 the key may use none of the candidates.
        RoutingError, StaleRouterError: from the router (400).
    """
    import asyncio

    future = _submit(engine, key, model, [text])
    return _counted(engine, await asyncio.wrap_future(future))[0]


def choose_each(engine: Any, key: Any, model: str, texts: list[str]) -> list[tuple[str | None, RouteDecision]]:
    """:func:`choose` for several texts, in one routing pass; blocking: call it from a worker thread."""
    return _counted(engine, _submit(engine, key, model, texts).result())


def _submit(engine: Any, key: Any, model: str, texts: list[str]) -> Any:
    """Check the request and queue its texts for the scheduler's next routing pass (a future of decisions)."""
    _, among = auto_among(model)
    router = engine.hub.router
    if router is None:
        raise ServeError(400, "model='auto' needs a router on this server: start it with adapterhub serve --router "
                         "NAME (build one with adapterhub router build)", code="no_router")
    if not texts or not all(text.strip() for text in texts):
        raise ServeError(400, "model='auto' reads the text to choose an adapter; send some text", code="empty_prompt")
    if key is not None and key.allow:
        candidates = among if among is not None else router.names
        allowed = [name for name in candidates if key.may_use(router.refs.get(name, name))]
        if not allowed:
            raise ServeError(403, f"key {key.name!r} may use none of the adapters {model!r} chooses between "
                             f"({', '.join(candidates)}; allowed: {', '.join(key.allow)})", code="model_not_allowed")
        among = allowed
    return engine.scheduler.route(texts, among)


def _counted(engine: Any, decisions: list[RouteDecision]) -> list[tuple[str | None, RouteDecision]]:
    """Each decision as ``(ref or None, decision)``, counted in ``/metrics``."""
    chosen = []
    for decision in decisions:
        engine.metrics.route_decision(decision.adapter, decision.decision)
        chosen.append((None if decision.choice is None else decision.label, decision))
    return chosen


def decide_each(hub: Any, jobs: list[Any]) -> None:
    """The scheduler's routing step: one feature pass over every job's texts, then each job's decisions (with its
    own candidates) into its future; a job whose candidates are wrong gets its own error."""
    router, found = hub.route_features([text for job in jobs for text in job.texts])
    table, start = mixable(router), 0
    for job in jobs:
        rows = found[start:start + len(job.texts)]
        start += len(job.texts)
        try:
            job.future.set_result(router.decide(rows, fallback=hub.router_fallback, among=job.among, mixable=table))
        except Exception as error:  # noqa: BLE001 - this request's error, not the others'
            job.future.set_exception(error)


def label_auto(engine: Any, key: Any, model: str, texts: list[str], method: str) -> tuple[list[Any], str]:
    """``/v1/classify`` or ``/v1/tag`` with ``auto``: each text answered by the adapter chosen for it.

    Returns the answers in order and a metrics label (the one adapter, or ``auto`` when several served).
    A text the router leaves to the bare base is a 400 (``task_mismatch``): only an adapter classifies.
    """
    chosen = choose_each(engine, key, model, texts)
    groups: dict[str | None, list[int]] = {}
    for index, (ref, _) in enumerate(chosen):
        groups.setdefault(ref, []).append(index)
    answers: list[Any] = [None] * len(texts)
    for ref, indices in groups.items():
        for index, answer in zip(indices, getattr(engine, method)(ref, [texts[i] for i in indices])):
            answers[index] = answer
    labels = {metrics_label(ref) for ref in groups}
    return answers, labels.pop() if len(labels) == 1 else "auto"

def metrics_label(ref: str | None) -> str:
    """A request's ``adapter`` metrics label: ``base``, the adapter, or ``mix`` (a weighted mix's weights vary per
    request, so they never become a label).

    >>> metrics_label(None), metrics_label("finance@1"), metrics_label("finance@1:0.6+legal@1:0.4")
    ('base', 'finance@1', 'mix')
    """
    from ..runtime.mixing import parse_mix

    if ref is None:
        return "base"
    mix = parse_mix(ref)
    return "mix" if mix is not None and len(mix.parts) > 1 else ref


def served_model(request: Any, model: str) -> str:
    """What served the request (``finance@1``, a mix string or ``base``) when the router chose, else ``model``."""
    record = request.scope.get("state", {}).get("access") or {}
    return record.get("served_by") or model
