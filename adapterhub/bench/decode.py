"""Decode time per token and prefill of long mixed rows, on our side only (part of the ``generation`` area).

A batch of ``rows`` prompts (the first forward shape's batch) is prefilled once through
our hub's :class:`~adapterhub.runtime.stepping.Stepper`, rows of one adapter side by side as
``generate`` and ``serve`` run them; every timed call then rewinds the batch to its
prefilled state and runs ``decode_steps`` greedy steps (one token per row each). Cases:
all rows bare, all on one adapter, rows interleaved over 3 and over 8 adapters (more
with ``decode_mixed_counts``). Prefill of a ``rows × tokens`` batch of random ids is
timed bare, on one adapter and interleaved over the most adapters. Everything is timed
round-robin; figures are medians, reported per token and as ratios to the single-adapter
decode and to the bare base. PEFT has no step API, so only our side runs.

>>> result = measure_decode(ctx)  # doctest: +SKIP
>>> result["decode"]["ratio_to_single"]["mixed_8"]  # doctest: +SKIP
1.04
"""

from __future__ import annotations

from functools import partial
from typing import Any, Sequence

from .._transformers import cache_layers
from .harness import ratio, time_interleaved
from .workload import forward_batch, generation_prompts, mixed_names


class DecodeRun:
    """A prefilled batch; each call rewinds it to the prefill and runs ``steps`` greedy decode steps."""

    def __init__(self, stepper: Any, prompts: Sequence[Sequence[int]], entries: Sequence[Any], *, steps: int) -> None:
        self.stepper, self.steps = stepper, steps
        batch, logits = stepper.prefill(prompts, entries, rows=list(range(len(prompts))))
        self.batch = stepper.merge(None, batch)  # rows of one adapter side by side, routing rebuilt
        first = logits.argmax(-1).tolist()
        self.first = [first[row] for row in self.batch.rows]
        self.mask, self.positions, self.width = self.batch.mask, self.batch.positions, self.batch.width

    def __call__(self) -> None:
        batch = self.batch
        for layer in cache_layers(batch.cache):  # back to the prefilled entries (views: no copy)
            layer.keys, layer.values = layer.keys[:, :, :self.width], layer.values[:, :, :self.width]
        batch.mask, batch.positions = self.mask, self.positions
        tokens = self.first
        for _ in range(self.steps):
            tokens = self.stepper.decode(batch, tokens).argmax(-1).tolist()


def measure_decode(ctx: Any) -> dict[str, Any]:
    """Decode ms per token (bare, single, mixed) and long-row prefill, ÷ single-adapter decode and ÷ bare."""
    side = ctx.sides.get("ours")
    config = ctx.config
    counts = sorted(set(config.decode_mixed_counts))
    if side is None or len(ctx.adapters) < max(counts, default=1):
        ctx.skipped.append({"area": "generation", "case": "decode", "reason": "needs our side and enough adapters"})
        return {}
    rows, tokens = config.forward_shapes[0]
    adapters = ctx.adapters[:max(counts, default=1)]
    side.ensure(adapters, exact=False)
    names = [adapter.name for adapter in adapters]
    stepper = side.hub.stepper()
    layouts = {"bare": [None] * rows, "single": [names[0]] * rows,
               **{f"mixed_{count}": mixed_names(names[:count], rows=rows) for count in counts}}
    entries = {case: [stepper.acquire(name) for name in row_names] for case, row_names in layouts.items()}
    try:
        prompts = [stepper.encode(text, None) for text in generation_prompts(rows)]
        long_rows = forward_batch(ctx.vocab_size, batch=rows, tokens=tokens, device="cpu")["input_ids"].tolist()
        cases = {f"decode_{case}": DecodeRun(stepper, prompts, row_entries, steps=config.decode_steps)
                 for case, row_entries in entries.items()}
        for case in ("bare", "single", f"mixed_{counts[-1]}"):
            cases[f"prefill_{case}"] = partial(stepper.prefill, long_rows, entries[case], rows=list(range(rows)))
        bar = ctx.progress(f"decode {rows} rows", config.repeats)
        stats = time_interleaved(cases, warmup=config.warmup, repeats=config.repeats, timer=ctx.timer,
                                 progress=bar.update)
        bar.close()
    finally:
        for row_entries in entries.values():
            for entry in row_entries:
                stepper.release(entry)
    per_token = {case.removeprefix("decode_"): value.scaled(1e3 / (config.decode_steps * rows))
                 for case, value in stats.items() if case.startswith("decode_")}
    prefill = {case.removeprefix("prefill_"): value.scaled(1e3) for case, value in stats.items()
               if case.startswith("prefill_")}
    return {
        "decode": {"rows": rows, "steps": config.decode_steps, "adapters": {case: len(set(names))
                                                                            for case, names in layouts.items()},
                   "ms_per_token": {case: value.to_dict() for case, value in per_token.items()},
                   "ratio_to_single": {case: ratio(value, per_token["single"]) for case, value in per_token.items()},
                   "ratio_to_bare": {case: ratio(value, per_token["bare"]) for case, value in per_token.items()}},
        "prefill": {"rows": rows, "tokens": tokens, "mixed": counts[-1],
                    "ms": {case: value.to_dict() for case, value in prefill.items()},
                    "ratio_to_bare": {case: ratio(value, prefill["bare"]) for case, value in prefill.items()}},
    }


def render(result: dict[str, Any]) -> list[str]:
    """The decode and prefill tables of the generation section."""
    from .markdown import format_value, stats_cell, table

    if not result:
        return []
    decode, prefill = result["decode"], result["prefill"]
    rows = [[case.replace("_", " "), stats_cell(stats), format_value(decode["ratio_to_single"][case], "×"),
             format_value(decode["ratio_to_bare"][case], "×")] for case, stats in decode["ms_per_token"].items()]
    lines = [f"Decode (ours, step API): {decode['rows']} rows, {decode['steps']} greedy steps per timed run, rows "
             "of one adapter side by side, bare = our hub's rows without an adapter; ms per generated token.", "",
             *table(["case", "ms / token", "÷ single", "÷ bare"], rows)]
    rows = [[case.replace("_", " "), stats_cell(stats), format_value(prefill["ratio_to_bare"][case], "×")]
            for case, stats in prefill["ms"].items()]
    lines += [f"Prefill (ours): {prefill['rows']} rows × {prefill['tokens']} tokens; mixed rows interleaved over "
              f"{prefill['mixed']} adapters.", "", *table(["case", "ms", "÷ bare"], rows)]
    return lines
