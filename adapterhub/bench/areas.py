"""The measured areas that run in one process: switch, load, forward, generation, memory.

Each ``measure_<area>(ctx)`` drives every contender in ``ctx.sides`` through
the same workload and returns a JSON-ready dict; times are milliseconds,
throughputs tokens per second, memory bytes. Training runs in child
processes and lives in ``training.py``.

>>> result = measure_switch(ctx)  # doctest: +SKIP
>>> result["ms"]["ours"]["p50"] < result["ms"]["peft"]["p50"]  # doctest: +SKIP
True
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

from .adapters import BenchAdapter
from .config import BenchConfig
from .harness import Stats, Timer, cuda_allocated_bytes, ratio, time_interleaved
from .sides import Side
from .workload import forward_batch, generation_prompts, mixed_names

_SETTLE_SECONDS = 1.0  # pause before a timed load series so the previous side's work has fully stopped

CONTENDERS = ("ours", "peft")


@dataclass
class BenchContext:
    """What every area needs: the run's config, the adapters and the sides (``bare``, ``ours``, ``peft``)."""

    config: BenchConfig
    adapters: list[BenchAdapter]
    sides: dict[str, Side]
    vocab_size: int
    device: str
    timer: Timer
    progress: Callable[[str, int], Any]  # (description, total) -> a tqdm-like bar with update() and close()
    skipped: list[dict[str, str]] = field(default_factory=list)
    base_name: str = ""  # what the run loaded as its base (a new process loads it again)

    def contenders(self) -> list[Side]:
        """The sides that compete (ours first), without the bare base."""
        return [self.sides[label] for label in CONTENDERS if label in self.sides]


def _compare(values: dict[str, Any], key: Callable[[Any], float]) -> float | None:
    """How many times faster ours is (``peft / ours`` of a time), or ``None`` unless both sides ran."""
    if "ours" in values and "peft" in values:
        return ratio(key(values["peft"]), key(values["ours"]))
    return None


def measure_switch(ctx: BenchContext) -> dict[str, Any]:
    """Latency of switching the active adapter with ``switch_resident`` adapters resident.

    A switch is host-side bookkeeping, so it is timed without the CUDA synchronisation
    (which alone costs more than the switch).
    """
    config = ctx.config
    host_clock = Timer("cpu")
    adapters = ctx.adapters[:config.switch_resident]
    names = [adapter.name for adapter in adapters]
    bar = ctx.progress("switch", len(ctx.contenders()) * config.switch_calls)
    result: dict[str, Any] = {"resident": len(names), "calls": config.switch_calls, "ms": {}}
    for side in ctx.contenders():
        side.ensure(adapters)
        for _ in range(config.warmup):
            for name in names:
                side.switch(name)
        samples = []
        for call in range(config.switch_calls):
            samples.append(host_clock.call(partial(side.switch, names[call % len(names)])))
            bar.update()
        result["ms"][side.label] = Stats.of(samples).scaled(1e3).to_dict()
    bar.close()
    result["speedup_vs_peft"] = _compare(result["ms"], lambda stats: stats["p50"])
    return result


def measure_load(ctx: BenchContext) -> dict[str, Any]:
    """Latency of making the 1st, 2nd, ... ``load_count``-th adapter resident, from an empty side.

    The series runs after a warm-up, in this process; ours' ``new_process`` figure is the first
    ``hub.load`` of new processes (:mod:`.first_load`), which is what a user's first load costs.
    """
    config = ctx.config
    adapters = ctx.adapters[:config.load_count]
    bar = ctx.progress("load", len(ctx.contenders()) * config.load_repeats * len(adapters))
    series: dict[str, list[list[float]]] = {side.label: [[] for _ in adapters] for side in ctx.contenders()}
    for side in ctx.contenders():  # warm-up: file cache, lazy imports, first-call allocations
        for _ in range(config.warmup):
            side.ensure([])
            side.ensure(adapters[:2])
    for _ in range(config.load_repeats):
        for side in ctx.contenders():
            side.ensure([])
            gc.collect()
            time.sleep(_SETTLE_SECONDS)  # let the other side's idle worker threads stop spinning
            for index, adapter in enumerate(adapters):
                series[side.label][index].append(side.load_timed(adapter, ctx.timer) * 1e3)
                bar.update()
    bar.close()
    result: dict[str, Any] = {"count": len(adapters), "repeats": config.load_repeats,
                              "file_bytes": adapters[0].file_bytes, "ms": {}}
    for label, per_index in series.items():
        result["ms"][label] = {"first": Stats.of(per_index[0]).to_dict(), "last": Stats.of(per_index[-1]).to_dict(),
                               "by_index": [statistics.median(samples) for samples in per_index]}
    if "ours" in result["ms"] and ctx.base_name:
        from .first_load import measure_first_loads

        registry_root = ctx.sides["ours"].hub.registry.root
        samples = measure_first_loads(config, base_name=ctx.base_name, registry_root=registry_root, ref=adapters[0].ref)
        result["ms"]["ours"]["new_process"] = Stats.of(samples).to_dict()
    result["speedup_vs_peft"] = _compare(result["ms"], lambda stats: stats["first"]["median"])
    return result


def measure_forward(ctx: BenchContext) -> dict[str, Any]:
    """Forward latency per batch shape: bare base, single adapter, mixed batches; ratios to the bare base."""
    config = ctx.config
    shapes = []
    resident = ctx.adapters[:max(config.mixed_counts, default=1)]
    for side in ctx.contenders():
        side.ensure(resident, exact=False)
    names = [adapter.name for adapter in resident]
    for batch_size, tokens in config.forward_shapes:
        batch = forward_batch(ctx.vocab_size, batch=batch_size, tokens=tokens, device=ctx.device)
        cases = {"bare": partial(ctx.sides["bare"].forward, batch, [None] * batch_size)}
        for side in ctx.contenders():
            cases[f"{side.label}_single"] = partial(side.forward, batch, [names[0]] * batch_size)
            for count in config.mixed_counts:
                if count <= batch_size:
                    cases[f"{side.label}_mixed_{count}"] = partial(
                        side.forward, batch, mixed_names(names[:count], rows=batch_size))
        skipped = [count for count in config.mixed_counts if count > batch_size]
        if skipped:
            ctx.skipped.append({"area": "forward", "case": f"mixed {skipped} at batch {batch_size}",
                                "reason": "more adapters than rows in the batch"})
        bar = ctx.progress(f"forward {batch_size}x{tokens}", config.repeats)
        stats = time_interleaved(cases, warmup=config.warmup, repeats=config.repeats, timer=ctx.timer,
                                 progress=bar.update)
        bar.close()
        bare = stats["bare"]
        shapes.append({"batch": batch_size, "tokens": tokens,
                       "ms": {name: value.scaled(1e3).to_dict() for name, value in stats.items()},
                       "ratio_to_bare": {name: ratio(value, bare) for name, value in stats.items() if name != "bare"},
                       "tokens_per_s": {name: batch_size * tokens / value.median for name, value in stats.items()}})
    return {"shapes": shapes, "resident": len(resident)}


def measure_generation(ctx: BenchContext) -> dict[str, Any]:
    """Greedy generation throughput of a batch whose rows use different adapters; then ours' decode and
    long-row prefill costs (``decode.py``)."""
    from .decode import measure_decode

    config = ctx.config
    runs = []
    for domains in config.generation_domains:
        adapters = ctx.adapters[:domains]
        rows = domains * config.generation_rows_per_domain
        names = mixed_names([adapter.name for adapter in adapters], rows=rows)
        prompts = generation_prompts(rows)
        cases = {}
        for side in ctx.contenders():
            side.ensure(adapters, exact=False)
            cases[side.label] = partial(side.generate, prompts, names, new_tokens=config.generation_new_tokens)
        bar = ctx.progress(f"generation {domains} domains", config.repeats)
        stats = time_interleaved(cases, warmup=min(config.warmup, 1), repeats=config.repeats, timer=ctx.timer,
                                 progress=bar.update)
        bar.close()
        new_tokens = rows * config.generation_new_tokens
        tokens_per_s = {label: new_tokens / value.median for label, value in stats.items()}
        runs.append({"domains": domains, "rows": rows, "new_tokens": config.generation_new_tokens,
                     "seconds": {label: value.to_dict() for label, value in stats.items()},
                     "tokens_per_s": tokens_per_s,
                     "speedup_vs_peft": _compare(stats, lambda value: value.median)})
    return {"runs": runs, **measure_decode(ctx)}


def measure_memory(ctx: BenchContext, *, base_footprints: dict[str, Any]) -> dict[str, Any]:
    """Bytes held for 1, 8, 32 resident adapters against the sum of their files; base footprints.

    ``resident_bytes`` is each side's own account (the hub's ``resident()``, PEFT's LoRA
    parameters). On CUDA, ``measured_bytes`` cross-checks it from the outside: the change in
    ``torch.cuda.memory_allocated`` caused by that side's loads alone (on CPU no such exact
    outside measure exists: freed heap memory is reused, so RSS deltas undercount).
    """
    cuda = str(ctx.device).startswith("cuda")
    rows = []
    for side in ctx.contenders():
        side.ensure([])  # start empty, so every side's growth is measured from nothing
    held = {side.label: 0 for side in ctx.contenders()}
    bar = ctx.progress("memory", len(ctx.config.memory_counts))
    for count in ctx.config.memory_counts:
        adapters = ctx.adapters[:count]
        file_bytes = sum(adapter.file_bytes for adapter in adapters)
        resident = {}
        for side in ctx.contenders():
            before = cuda_allocated_bytes(ctx.device)
            side.ensure(adapters)
            gc.collect()
            held[side.label] += cuda_allocated_bytes(ctx.device) - before
            resident[side.label] = side.resident_bytes()
        row = {"count": count, "file_bytes": file_bytes, "resident_bytes": resident,
               "ratio_to_files": {label: value / file_bytes for label, value in resident.items()}}
        if cuda:
            row["measured_bytes"] = dict(held)
        rows.append(row)
        bar.update()
    bar.close()
    return {"resident": rows, "base_footprint": base_footprints}
