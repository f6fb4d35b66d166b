"""Prometheus metrics of one server (its own registry, so several servers can share a process).

Labels never carry keys or text: ``endpoint`` is the route, ``adapter`` the model a
request resolved to (``base`` for the bare base, ``-`` when none was resolved) when it is among the
``top_k`` adapters by traffic, else ``other`` (:mod:`~adapterhub.serve.adapter_labels`: bounded cardinality).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from .adapter_labels import AdapterLabels, remove_series

_LATENCY = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_ROWS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """The server's counters, gauges and histograms (``top_k``: adapters with their own series)."""

    def __init__(self, top_k: int = 32) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

        disable_created_metrics()  # the *_created series double the output and nobody reads them

        self.registry = CollectorRegistry()
        self.recent_errors: deque[dict[str, Any]] = deque(maxlen=50)  # the last failed requests (no text, no key)
        self.on_request: list[Any] = []  # called as on_request(endpoint, adapter, status, seconds) (see rollout.py)
        r = self.registry
        self.requests = Counter("adapterhub_requests", "HTTP requests by endpoint, adapter and status",
                                ["endpoint", "adapter", "status"], registry=r)
        self.latency = Histogram("adapterhub_request_seconds", "Request latency (until the last byte)",
                                 ["endpoint", "adapter"], buckets=_LATENCY, registry=r)
        self.ttft = Histogram("adapterhub_time_to_first_token_seconds", "Time from arrival to the first token",
                              ["adapter"], buckets=_LATENCY, registry=r)
        self.prompt_tokens = Counter("adapterhub_prompt_tokens", "Prompt tokens processed", ["adapter"], registry=r)
        self.generated_tokens = Counter("adapterhub_generated_tokens", "Tokens generated", ["adapter"], registry=r)
        self.queue_depth = Gauge("adapterhub_queue_depth", "Requests waiting for a batch row", registry=r)
        self.running_rows = Gauge("adapterhub_running_rows", "Rows in the running batch", registry=r)
        self.batch_rows = Histogram("adapterhub_batch_rows", "Rows per decode step", buckets=_ROWS, registry=r)
        self.resident = Gauge("adapterhub_resident_adapters", "Adapters resident in memory", registry=r)
        self.loads = Counter("adapterhub_adapter_loads", "Adapters made resident", ["adapter"], registry=r)
        self.route_decisions = Counter("adapterhub_route_decisions", "model='auto' decisions by the router's top "
                                       "adapter and decision (adapter, mix, base)", ["adapter", "decision"], registry=r)
        self.evictions = Counter("adapterhub_adapter_evictions", "Adapters evicted or unloaded", ["adapter"],
                                 registry=r)
        per_adapter = [(self.requests, ("endpoint", "adapter", "status")), (self.latency, ("endpoint", "adapter")),
                       *((m, ("adapter",)) for m in (self.ttft, self.prompt_tokens, self.generated_tokens,
                                                      self.loads, self.evictions))]
        self.adapters = AdapterLabels(top_k, on_demote=lambda name: remove_series(per_adapter, name))

    def route_decision(self, adapter: str, decision: str) -> None:
        """Count one ``model="auto"`` decision (``adapter``: the router's top candidate, bounded by its adapters)."""
        self.route_decisions.labels(adapter=adapter, decision=decision).inc()

    def queue(self, waiting: int, running: int) -> None:
        self.queue_depth.set(waiting)
        self.running_rows.set(running)

    def residency(self, before: set[str], after: set[str]) -> None:
        """Count loads and evictions from two snapshots of the resident names."""
        for name in after - before:
            self.loads.labels(adapter=self.adapters.label(name)).inc()
        for name in before - after:
            self.evictions.labels(adapter=self.adapters.label(name)).inc()
        self.resident.set(len(after))

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def request(self, endpoint: str, adapter: str, status: int, seconds: float) -> None:
        label = self.adapters.count(adapter)  # the adapter itself, or "other" beyond the top K
        self.requests.labels(endpoint=endpoint, adapter=label, status=str(status)).inc()
        if status >= 400:  # the console's "recent errors" (the adapter's own name: no series is made of it)
            self.recent_errors.append({"ts": round(time.time(), 3), "endpoint": endpoint, "adapter": adapter[:200],
                                       "status": status, "seconds": round(seconds, 4)})
        self.latency.labels(endpoint=endpoint, adapter=label).observe(seconds)
        for listener in self.on_request:  # listeners get the adapter's own name
            listener(endpoint, adapter, status, seconds)

    def tokens(self, adapter: str, *, prompt: int = 0, generated: int = 0) -> None:
        adapter = self.adapters.label(adapter)
        if prompt:
            self.prompt_tokens.labels(adapter=adapter).inc(prompt)
        if generated:
            self.generated_tokens.labels(adapter=adapter).inc(generated)

    def first_token(self, adapter: str, seconds: float) -> Any:
        adapter = self.adapters.label(adapter)
        self.ttft.labels(adapter=adapter).observe(seconds)
