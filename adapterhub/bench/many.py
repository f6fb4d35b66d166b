"""The many-adapters area: serving throughput over N registered adapters under one, Zipf and uniform traffic.

``N`` synthetic adapters of mixed shapes (:mod:`.many_adapters`) are registered; two real servers run,
each in its own process, over that registry with the same number of device-resident adapters:

* ``ours``: ``adapterhub serve --registry R --max-resident K`` (continuous mixed batching; adapters load on
  first use, the least recently used unpinned one is evicted);
* ``peft``: the plain PEFT server of the serve area, extended the way users extend it (``load_adapter`` on
  a miss, ``delete_adapter`` of the least recently used beyond K; one request at a time).

``many_clients`` clients send requests at once (``many_prompt_tokens``-token prompts, exactly
``many_new_tokens`` new tokens, greedy) whose adapters follow the traffic: ``one`` (the ceiling), Zipf(α) or
uniform over N. Every leg first sends ``many_warmup_requests`` untimed requests of the same traffic (the
resident set reaches its steady state), then ``many_requests`` timed ones. The headline legs run at the
largest N, ``many_repeats`` times, the sides alternating; the sweep runs Zipf and uniform once at every other N
(N = 1 is the one-adapter leg, the largest N the headline's first repeat).
During each timed leg the servers' counters are read before and after, and their resident bytes sampled.
The registry part (:mod:`.registry_scale`) times a registry of ``many_registry_entries`` entries.

>>> result = measure_many(config, base_name="smollm2-135m-instruct")  # doctest: +SKIP
>>> result["headline"]["ratios"]["ours"]["zipf_over_one"]["median"] >= 0.8  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any, Sequence

from .many_adapters import choices, make_many_adapters, register_many
from .many_servers import ServerProcess, ours_command, peft_command
from .serving import drive, prompts_of_length

SIDES = ("ours", "peft")
SWEEP_TRAFFIC = ("zipf", "uniform")


def measure_many(config: Any, *, base_name: str, progress: bool = False) -> dict[str, Any]:
    """Register the adapters, time the registry, run both servers through every leg.

    Returns:
        ``adapters`` (count, shapes, bytes), ``registration``, ``registry`` (see
        :func:`~.registry_scale.measure_registry_scale`), ``headline`` (every leg of every repeat at the largest N
        and the ratios: zipf/uniform over one per side, ours over PEFT per traffic, p99 TTFT zipf over one) and
        ``sweep`` (tokens/s per side, traffic and N).
    """
    from ..base import load_base
    from ..registry import Registry
    from .registry_scale import measure_registry_scale

    work = config.work_dir / "many"
    base = load_base(base_name, device="cpu", dtype=config.dtype)
    counts = sorted(set(config.many_counts))
    adapters = make_many_adapters(base, work / "adapters", count=counts[-1], progress=progress)
    registry_root = work / "registry"
    if registry_root.exists():
        shutil.rmtree(registry_root)
    seconds = register_many(Registry(registry_root), adapters, base=base, progress=progress)
    result: dict[str, Any] = {
        "clients": config.many_clients, "resident": config.many_resident, "alpha": config.many_alpha,
        "prompt_tokens": config.many_prompt_tokens, "new_tokens": config.many_new_tokens,
        "requests": config.many_requests, "warmup_requests": config.many_warmup_requests,
        "adapters": _describe(adapters), "registration": {"seconds": seconds, "per_s": len(adapters) / seconds}}
    result["registry"] = measure_registry_scale(base, work / "scale", entries=config.many_registry_entries,
                                                progress=progress)
    prompts = prompts_of_length(base.tokenizer, config.many_prompt_tokens, 64)
    del base
    names = [adapter.name for adapter in adapters]
    with tempfile.TemporaryDirectory(prefix="adapterhub-bench-many-") as logs:
        servers = {side: ServerProcess(command(config, base_name, registry_root), Path(logs) / f"{side}.log")
                   for side, command in (("ours", ours_command), ("peft", peft_command))}
        try:
            for server in servers.values():
                server.start()
            for server in servers.values():
                server.wait_ready()
            legs = _headline(config, servers, names[:counts[-1]], prompts)
            result["headline"] = {"n": counts[-1], "legs": legs, "ratios": _ratios(legs)}
            result["sweep"] = _sweep(config, servers, names, counts, prompts, reuse=legs)
        finally:
            for server in servers.values():
                server.stop()
    return result


def _describe(adapters: Sequence[Any]) -> dict[str, Any]:
    shapes: dict[str, dict[str, int]] = {}
    for adapter in adapters:
        shape = shapes.setdefault(adapter.shape, {"count": 0, "file_bytes": 0})
        shape["count"] += 1
        shape["file_bytes"] = adapter.file_bytes
    return {"count": len(adapters), "shapes": shapes, "total_bytes": sum(a.file_bytes for a in adapters)}


def _headline(config: Any, servers: dict[str, ServerProcess], names: list[str],
              prompts: list[str]) -> list[dict[str, Any]]:
    """Every traffic at the largest N, ``many_repeats`` times, sides alternating (which goes first alternates too)."""
    legs = []
    for repeat in range(config.many_repeats):
        for traffic in ("one", "zipf", "uniform"):
            order = SIDES if repeat % 2 == 0 else SIDES[::-1]
            for side in order:
                if side == "peft" and config.many_peft_repeats is not None and repeat >= config.many_peft_repeats:
                    continue
                leg = run_leg(config, servers[side], names, prompts, traffic=traffic, seed=repeat,
                              streaming=side == "ours")
                legs.append({"side": side, "traffic": traffic, "repeat": repeat, "n": len(names), **leg})
    return legs


def _sweep(config: Any, servers: dict[str, ServerProcess], names: list[str], counts: Sequence[int],
           prompts: list[str], *, reuse: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One pass per N, traffic and side; N = 1 and the largest N reuse the headline's first repeat."""
    first = {(leg["side"], leg["traffic"]): leg for leg in reuse if leg["repeat"] == 0}
    points = []
    for n in counts:
        for traffic in SWEEP_TRAFFIC if n > 1 else ("one",):
            for side in SIDES:
                if n == 1 or n == counts[-1]:
                    leg = {**first[(side, "one" if n == 1 else traffic)], "reused": True}
                else:
                    leg = run_leg(config, servers[side], names[:n], prompts, traffic=traffic, seed=100 + n,
                                  streaming=side == "ours")
                points.append({**leg, "side": side, "traffic": traffic, "n": n})
    return points


def run_leg(config: Any, server: ServerProcess, names: list[str], prompts: list[str], *, traffic: str, seed: int,
            streaming: bool) -> dict[str, Any]:
    """A warm-up then the timed requests of one traffic; the figures, the counters' change and peak bytes."""
    warm = choices(names, traffic, count=config.many_warmup_requests, seed=seed * 2, alpha=config.many_alpha)
    timed = choices(names, traffic, count=config.many_requests, seed=seed * 2 + 1, alpha=config.many_alpha)
    if warm:
        asyncio.run(drive(server.url, _schedule(warm, prompts, config.many_clients), new_tokens=2,
                          streaming=streaming))
    before = server.counters()
    measured, peaks = asyncio.run(_sampled(server, _schedule(timed, prompts, config.many_clients),
                                           new_tokens=config.many_new_tokens, streaming=streaming))
    after = server.counters()
    change = {key: after[key] - before.get(key, 0) for key in after if isinstance(after[key], (int, float))}
    loads = change.get("loads", 0)
    return {**measured, "distinct": len(set(timed)), "counters": change, "peaks": peaks,
            "device_hit_ratio": max(0.0, 1 - loads / measured["ok"]) if measured["ok"] else None,
            "tiers": tier_figures(change, peaks, server.gauges())}


def tier_figures(change: dict[str, float], peaks: dict[str, float], now: dict[str, float]) -> dict[str, Any]:
    """Per tier (where the server labels series by ``tier``): hit ratio over the leg, loads, evictions, the peak
    of its resident bytes and whether that peak stayed within its budget.

    >>> tier_figures({"adapterhub_tier_hits[host]": 3, "adapterhub_tier_misses[host]": 1},
    ...              {"adapterhub_tier_bytes[host]": 50}, {"adapterhub_tier_budget_bytes[host]": 64})
    {'host': {'hit_ratio': 0.75, 'loads': None, 'evictions': None, 'peak_bytes': 50, 'budget_bytes': 64, 'within_budget': True}}
    """
    tiers = sorted({key[key.index("[") + 1:-1] for key in [*change, *peaks] if key.endswith("]")})
    figures: dict[str, Any] = {}
    for tier in tiers:
        hits, misses = change.get(f"adapterhub_tier_hits[{tier}]"), change.get(f"adapterhub_tier_misses[{tier}]")
        peak, budget = peaks.get(f"adapterhub_tier_bytes[{tier}]"), now.get(f"adapterhub_tier_budget_bytes[{tier}]")
        figures[tier] = {"hit_ratio": hits / (hits + misses) if hits is not None and misses is not None
                         and hits + misses else None,
                         "loads": change.get(f"adapterhub_tier_loads[{tier}]"),
                         "evictions": change.get(f"adapterhub_tier_evictions[{tier}]"),
                         "peak_bytes": peak, "budget_bytes": budget or None,
                         "within_budget": None if peak is None or not budget else peak <= budget}
    return figures


def _schedule(names: list[str], prompts: list[str], clients: int) -> list[list[tuple[str, str]]]:
    """Request ``i`` goes to client ``i % clients``; its prompt is ``prompts[i % len(prompts)]``."""
    schedule: list[list[tuple[str, str]]] = [[] for _ in range(min(clients, len(names)))]
    for index, name in enumerate(names):
        schedule[index % len(schedule)].append((name, prompts[index % len(prompts)]))
    return schedule


async def _sampled(server: ServerProcess, schedule: list[list[tuple[str, str]]], *, new_tokens: int,
                   streaming: bool) -> tuple[dict[str, Any], dict[str, float]]:
    """:func:`drive` while the server's gauges are sampled every half second (their peaks)."""
    peaks: dict[str, float] = {}
    running = asyncio.create_task(drive(server.url, schedule, new_tokens=new_tokens, streaming=streaming))
    while not running.done():
        for key, value in (await asyncio.to_thread(server.gauges)).items():
            peaks[key] = max(peaks.get(key, value), value)
        await asyncio.wait([running], timeout=0.5)
    return running.result(), peaks


def _ratios(legs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per repeat, then median / min / max over repeats: the ratios the issue's targets name."""
    by = {(leg["side"], leg["traffic"], leg["repeat"]): leg for leg in legs}
    repeats = sorted({leg["repeat"] for leg in legs})

    def spread(values: list[float]) -> dict[str, Any]:
        values = [value for value in values if value is not None]
        return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values),
                "each": values} if values else {"median": None}

    def tokens(side: str, traffic: str, repeat: int) -> float | None:
        leg = by.get((side, traffic, repeat))
        return leg["tokens_per_s"] if leg and leg["ok"] else None

    def over(top: float | None, bottom: float | None) -> float | None:
        return top / bottom if top and bottom else None

    ratios: dict[str, Any] = {side: {f"{traffic}_over_one": spread([over(tokens(side, traffic, r), tokens(side, "one", r))
                                                                    for r in repeats])
                                     for traffic in ("zipf", "uniform")} for side in SIDES}
    ratios["ours_over_peft"] = {traffic: spread([over(tokens("ours", traffic, r), tokens("peft", traffic, r))
                                                 for r in repeats]) for traffic in ("one", "zipf", "uniform")}

    def ttft_p99(traffic: str, repeat: int) -> float | None:
        leg = by.get(("ours", traffic, repeat))
        return (leg.get("ttft_ms") or {}).get("p99") if leg else None

    ratios["ours"]["ttft_p99_zipf_over_one"] = spread([over(ttft_p99("zipf", r), ttft_p99("one", r))
                                                       for r in repeats])
    return ratios
