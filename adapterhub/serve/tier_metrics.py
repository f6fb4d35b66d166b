"""``/metrics`` series of the residency tiers, read from the residency at each scrape (so they always agree
with ``GET /v1/adapters`` and ``hub.resident()``). Every series is labelled by ``tier`` only — a fixed,
small label set however many adapters come and go.

- ``adapterhub_tier_adapters{tier}``, ``adapterhub_tier_bytes{tier}``, ``adapterhub_tier_budget_bytes{tier}``
  (absent where the tier has no byte budget): what each tier holds now;
- ``adapterhub_tier_loads_total{tier}``, ``adapterhub_tier_evictions_total{tier}``: adapters put in and taken
  out of each tier (device: slots; host: read from disk into host RAM);
- ``adapterhub_tier_hits_total{tier}``, ``adapterhub_tier_misses_total{tier}``, ``adapterhub_tier_hit_ratio{tier}``:
  lookups that found the adapter in that tier;
- ``adapterhub_adapter_load_seconds{tier}``: how long making an adapter device-resident took, by the tier it
  came from (``host``: a copy; ``disk``: read, verify, deserialise, copy).

>>> metrics.registry.register(TierCollector(hub.residency))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Iterator

from ..runtime.host_tier import LOAD_SECONDS_BUCKETS

TIERS = ("device", "host")


class TierCollector:
    """A Prometheus collector over one :class:`~adapterhub.runtime.residency.Residency`."""

    def __init__(self, residency: Any) -> None:
        self.residency = residency

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        usage, counters = self.residency.usage(), self.residency.counters
        held = GaugeMetricFamily("adapterhub_tier_adapters", "Adapters held per residency tier", labels=["tier"])
        size = GaugeMetricFamily("adapterhub_tier_bytes", "Bytes of adapter tensors held per tier", labels=["tier"])
        budget = GaugeMetricFamily("adapterhub_tier_budget_bytes", "Byte budget per tier", labels=["tier"])
        ratio = GaugeMetricFamily("adapterhub_tier_hit_ratio", "Lookups that found the adapter in the tier",
                                  labels=["tier"])
        totals = {name: CounterMetricFamily(f"adapterhub_tier_{name}", help_, labels=["tier"]) for name, help_ in (
            ("loads", "Adapters put into the tier"), ("evictions", "Adapters taken out of the tier (LRU or unload)"),
            ("hits", "Lookups that found the adapter in the tier"), ("misses", "Lookups that did not"))}
        for tier in TIERS:
            held.add_metric([tier], usage[tier]["adapters"])
            size.add_metric([tier], usage[tier]["bytes"])
            if usage[tier]["budget_bytes"] is not None:
                budget.add_metric([tier], usage[tier]["budget_bytes"])
            ratio.add_metric([tier], counters.hit_ratio(tier))
            for name, family in totals.items():
                family.add_metric([tier], getattr(counters, name)[tier])
        latency = HistogramMetricFamily("adapterhub_adapter_load_seconds",
                                        "Time to make an adapter device-resident, by the tier it came from",
                                        labels=["tier"])
        for origin in ("host", "disk"):
            counts, total = counters.histogram(origin)
            bounds = [f"{bound:g}" for bound in LOAD_SECONDS_BUCKETS] + ["+Inf"]
            latency.add_metric([origin], list(zip(bounds, counts)), total)
        yield from (held, size, budget, ratio, *totals.values(), latency)
