"""Continuous batching: one running batch of mixed-adapter rows, advanced one token per step.

Each step of the scheduler thread:

0. routes the ``model="auto"`` requests that arrived since the last step, all in one forward pass of the
   base's first blocks (:class:`RouteJob`; the request then joins a later step under the adapter chosen);
1. admits waiting jobs (up to ``max_rows`` running) and prefills them together;
   their first token is chosen at once and they join the running batch;
2. drops rows that finished (end token, a stop string, their token limit) or
   whose client went away, freeing their cache rows and adapter pins;
3. feeds every remaining row its last token through one routed forward
   (:meth:`Stepper.decode`) and chooses each row's next token with its own
   :class:`Sampler`.

The model math is the runtime's (:mod:`adapterhub.runtime.stepping`); this
module only decides who goes when, turns tokens into text deltas (holding back
text that might still become a stop string) and reports events to the job's
``emit`` callback (from this thread; the caller hands them to its event loop).

Events: ``{"type": "token", "id", "logprob", "text"}`` per token, then
``{"type": "done", "finish": "eos"|"stop"|"length", "text", "tokens"}`` or
``{"type": "error", "error": ServeError}``.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

from ..cpu import rebalance
from ..runtime.residency import Held
from .protocol import ServeError, from_exception

log = logging.getLogger("adapterhub.serve")


@dataclass(eq=False)
class Job:
    """One generation request as the scheduler sees it (the caller already holds ``entry``'s pin)."""

    prompt: list[int]
    entry: Held | None  # None: the bare base; released by the scheduler when the job ends
    max_new_tokens: int
    sampler: Any  # adapterhub.runtime.sampling.Sampler
    emit: Callable[[dict[str, Any]], None]
    stops: list[str] = field(default_factory=list)
    stop_at_eos: bool = True
    cancelled: bool = False
    tokens: list[int] = field(default_factory=list)
    sent: int = 0  # characters of text already emitted
    finish: str | None = None

    def cancel(self) -> None:
        """Ask the scheduler to drop this row at its next step (safe from any thread)."""
        self.cancelled = True


@dataclass(eq=False)
class RouteJob:
    """Texts of one request whose adapter the router chooses at the scheduler's next step; ``future`` gets the
    decisions (a list of :class:`~adapterhub.runtime.routers.RouteDecision`) or the error."""

    texts: list[str]
    among: list[str] | None = None
    future: Future = field(default_factory=Future)


ROUTE_TEXTS = 64
"""Texts one scheduler step routes at most (about 0.5 s of the 135M base's first 6 blocks on 2 CPU cores)."""


class Scheduler:
    """Runs jobs on one :class:`~adapterhub.runtime.stepping.Stepper` in a background thread.

    Args:
        stepper: the hub's stepper.
        max_rows: most rows in the running batch (``1`` turns batching off).
        max_queue: most jobs waiting for a row; :meth:`submit` refuses more with 503.
        on_step: called with the row count of every decode step (metrics).
        on_queue: called with ``(waiting, running)`` whenever they change (metrics).
        route_batch: decides every :class:`RouteJob` of a step from one routing pass (resolves their futures);
            ``None``: :meth:`route` refuses.
        route_texts: most texts one step routes (at least one request); the others wait for the next step,
            so a burst of ``auto`` requests cannot stall the running rows for long.
    """

    def __init__(self, stepper: Any, *, max_rows: int = 32, max_queue: int = 256,
                 on_step: Callable[[int], None] | None = None,
                 on_queue: Callable[[int, int], None] | None = None,
                 route_batch: Callable[[list[RouteJob]], None] | None = None, route_texts: int = ROUTE_TEXTS) -> None:
        if max_rows < 1 or max_queue < 0 or route_texts < 1:
            raise ServeError(400, "max_rows and route_texts must be >= 1 and max_queue >= 0")
        self.stepper = stepper
        self.max_rows = max_rows
        self.max_queue = max_queue
        self._on_step = on_step or (lambda rows: None)
        self._on_queue = on_queue or (lambda waiting, running: None)
        self._waiting: deque[Job] = deque()
        self._routes: list[RouteJob] = []
        self._route_batch = route_batch
        self.route_texts = route_texts
        self._batch: Any = None
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.cancelled_rows = 0  # rows dropped because their client went away

    # --- the caller's side ------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="adapterhub-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Finish every admitted and waiting job, then end the thread."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, job: Job) -> None:
        """Queue ``job``; raises a 503 :class:`ServeError` (with ``Retry-After``) when the queue is full."""
        self._enqueue(self._waiting, job, "requests waiting")
        self._report()

    def route(self, texts: list[str], among: list[str] | None = None) -> Future:
        """Queue ``texts`` for the next step's routing pass; the returned future gets their decisions.

        Raises:
            ServeError: 400 no router on this scheduler; 503 shutting down or ``max_queue`` requests waiting.
        """
        if self._route_batch is None:
            raise ServeError(400, "this server has no router", code="no_router")
        job = RouteJob(list(texts), None if among is None else list(among))
        self._enqueue(self._routes, job, "requests waiting to be routed")
        return job.future

    def _enqueue(self, queue: Any, item: Any, what: str) -> None:
        """Append ``item`` to ``queue`` and wake the thread, or refuse with 503 (shutting down, or full)."""
        with self._wake:
            if self._stopping:
                raise ServeError(503, "the server is shutting down", code="shutting_down",
                                 headers={"Retry-After": "5"})
            if len(queue) >= self.max_queue:
                raise ServeError(503, f"the server is at capacity ({len(queue)} {what}); retry later",
                                 code="queue_full", headers={"Retry-After": "1"})
            queue.append(item)
            self._wake.notify()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        batch = self._batch
        return 0 if batch is None else len(batch)

    # --- the thread -----------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._waiting and not self._routes and self._batch is None and not self._stopping:
                    self._wake.wait()
                if self._stopping and not self._waiting and not self._routes and self._batch is None:
                    return
                room = self.max_rows - self.running
                admitted = [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]
                routes = self._take_routes()
            self._report()
            if routes:
                self._route(routes)
            try:
                self._step(admitted)
            except Exception as error:  # noqa: BLE001 - one failing step must not end the server
                log.exception("scheduler step failed; failing its rows")
                rows = ([] if self._batch is None else list(self._batch.rows)) + admitted
                self._batch = None
                for job in dict.fromkeys(rows):
                    if job.finish is None:
                        self._end(job, error=from_exception(error))
            self._report()

    def _take_routes(self) -> list[RouteJob]:
        """The waiting route jobs this step takes: in arrival order, up to ``route_texts`` texts (one job at
        least). Call with the lock held; ``_routes`` stays the same list (route() appends to it)."""
        taken, texts = 0, 0
        while taken < len(self._routes) and (taken == 0 or texts + len(self._routes[taken].texts) <= self.route_texts):
            texts += len(self._routes[taken].texts)
            taken += 1
        routes = self._routes[:taken]
        del self._routes[:taken]
        return routes

    def _route(self, routes: list[RouteJob]) -> None:
        """One routing pass for every request that asked since the last step (a failure fails those requests).
        A request that went away (its future cancelled) is dropped first; the others can no longer be cancelled."""
        routes = [job for job in routes if job.future.set_running_or_notify_cancel()]
        if not routes:
            return
        try:
            self._route_batch(routes)
        except Exception as error:  # noqa: BLE001 - the routed requests get the error; the batch goes on
            log.warning("routing pass failed: %s", error)
            for job in routes:
                if not job.future.done():
                    job.future.set_exception(error)

    def _step(self, admitted: list[Job]) -> None:
        rebalance()  # other adapterhub processes came or went: keep this one at its share of the cores
        stepper = self.stepper
        admitted = [job for job in admitted if not self._dropped(job)]
        if admitted:
            try:
                joining, logits = stepper.prefill([job.prompt for job in admitted],
                                                  [job.entry for job in admitted], rows=admitted)
            except Exception as error:  # noqa: BLE001 - fails the joining rows only; the running batch goes on
                log.exception("prefill failed; failing its %d joining rows", len(admitted))
                for job in admitted:
                    self._end(job, error=from_exception(error))
                admitted = []
            for row, job in enumerate(admitted):
                self._advance_or_fail(job, logits[row])
            if admitted:
                self._batch = stepper.merge(self._batch, joining)
        if self._batch is None:
            return
        alive = [job for job in self._batch.rows if job.finish is None and not self._dropped(job)]
        self._batch = stepper.keep(self._batch, alive)
        if self._batch is None:
            return
        self._on_step(len(self._batch))
        logits = stepper.decode(self._batch, [job.tokens[-1] for job in self._batch.rows])
        for row, job in enumerate(self._batch.rows):
            self._advance_or_fail(job, logits[row])

    def _dropped(self, job: Job) -> bool:
        if job.cancelled and job.finish is None:
            self.cancelled_rows += 1
            self._end(job, finish="cancelled")
        return job.cancelled

    def _advance_or_fail(self, job: Job, logits: Any) -> None:
        """:meth:`_advance`, ending only this job when its sampling or logits go bad (the other rows decode on;
        a finished row leaves the batch at the next step)."""
        try:
            self._advance(job, logits)
        except Exception as error:  # noqa: BLE001 - one row's failure is that row's answer
            log.warning("row failed alone: %s", error)
            self._end(job, error=from_exception(error))

    def _advance(self, job: Job, logits: Any) -> None:
        """Choose the job's next token, emit its text delta, and end it when a stop rule says so."""
        token, logprob = job.sampler.pick(logits)
        job.tokens.append(token)
        finish = "eos" if job.stop_at_eos and token in self.stepper.eos_ids else None
        if finish is None and getattr(job.sampler, "complete", False):
            finish = "stop"  # the row's response schema closed its JSON value: the answer ends at its last brace
        text = self.stepper.tokenizer.decode(job.tokens, skip_special_tokens=True)
        cut = min((text.find(s) for s in job.stops if s in text), default=-1)
        if cut >= 0:
            text, finish = text[:cut], "stop"
        elif finish is None and len(job.tokens) >= job.max_new_tokens:
            finish = "length"
        safe = len(text) if finish else len(text) - _holdback(text, job.stops)
        delta = text[job.sent:safe] if safe > job.sent else ""
        job.sent = max(job.sent, safe)
        self._emit(job, {"type": "token", "id": token, "logprob": logprob, "text": delta,
                         "special": token in self.stepper.eos_ids})
        if finish:
            self._end(job, finish=finish, text=text)

    def _end(self, job: Job, *, finish: str = "error", text: str = "", error: ServeError | None = None) -> None:
        job.finish = finish
        self.stepper.release(job.entry)
        job.entry = None
        if error is not None:
            self._emit(job, {"type": "error", "error": error})
        elif finish != "cancelled":
            self._emit(job, {"type": "done", "finish": finish, "text": text, "tokens": len(job.tokens)})

    def _emit(self, job: Job, event: dict[str, Any]) -> None:
        try:
            job.emit(event)
        except Exception:  # noqa: BLE001 - the client's event loop is gone: drop the row
            job.cancelled = True

    def _report(self) -> None:
        self._on_queue(len(self._waiting), self.running)


def _holdback(text: str, stops: list[str]) -> int:
    """Characters at the end of ``text`` not yet safe to send: an unfinished UTF-8 character, or the
    start of a stop string that the next tokens may complete."""
    hold = 0
    while hold < len(text) and text[len(text) - 1 - hold] == "\ufffd":
        hold += 1
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:size]):
                hold = max(hold, size)
                break
    return hold

