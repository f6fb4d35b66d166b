"""Constrained decoding cost: one decode step with schema rows ÷ the same step without, same batch shape.

Each repeat keeps two running batches of the same shape: every row free (greedy), and half the rows (or
``--constrained-rows``) constrained by a JSON schema (a grammar restarts when it closes, so the shape never
changes). They advance alternately, step by step, so a busy machine's drifts hit both sides alike. A step is
the routed forward plus every row's choice of its next token — what the scheduler does per step. Also
reports the grammar rows' own share of a step, the schema's compile time (first use, cached) and one
row's mask time.

    python -m adapterhub.bench.constrained --rows 8 --steps 24 --repeats 5 --out runs/bench-constrained
    python -m adapterhub.bench.constrained --rows 8 --constrained-rows 8  # every row under the schema

Writes ``constrained.json`` and ``constrained.png`` (step times of both sides per repeat) in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

SCHEMA = {"type": "object", "properties": {
    "subject": {"enum": ["mathematics", "physics", "chemistry", "biology", "history", "geography", "literature",
                         "computer_science"]},
    "level": {"enum": ["primary", "secondary", "university"]},
    "reason": {"type": "string", "maxLength": 200}},
    "required": ["subject", "level", "reason"], "additionalProperties": False}
PROMPT = "Classify this question for a teacher and explain briefly: why does ice float on water?"


def measure(hub: Any, *, rows: int, steps: int, repeats: int, constrained_rows: int | None = None) -> dict[str, Any]:
    """Per-repeat median step milliseconds of both sides, their ratio, compile and mask timings."""
    import torch

    stepper = hub.stepper()
    constrained_rows = rows // 2 if constrained_rows is None else constrained_rows
    start = time.perf_counter()
    hub.grammars.compile({"type": "boolean"})  # builds the tokenizer's grammar vocabulary once
    tokenizer_s = time.perf_counter() - start
    start = time.perf_counter()
    hub.grammars.compile(SCHEMA)
    first_ms = 1000 * (time.perf_counter() - start)
    cached = []
    for _ in range(50):
        start = time.perf_counter()
        hub.grammars.state(SCHEMA)
        cached.append(1000 * (time.perf_counter() - start))
    prompt = stepper.encode(PROMPT, None)
    sides: dict[str, list[float]] = {"free": [], "schema": []}
    grammar_ms: list[float] = []
    mask_us: list[float] = []
    for _ in range(repeats):
        runs = {side: _Side(stepper, prompt, rows, constrained_rows if side == "schema" else 0, hub.grammars)
                for side in sides}
        times: dict[str, list[float]] = {side: [] for side in sides}
        for step in range(steps):  # the sides alternate step by step (and which goes first): load drifts hit both
            for side in (("free", "schema") if step % 2 == 0 else ("schema", "free")):
                times[side].append(runs[side].step())
        for side in sides:
            sides[side].append(statistics.median(times[side]))
        grammar_ms.append(statistics.median(runs["schema"].grammar_ms))
        state = runs["schema"].samplers[0].state
        row = runs["schema"].logits[0].float().clone()
        start = time.perf_counter()
        state.mask(row)
        mask_us.append(1e6 * (time.perf_counter() - start))
    ratios = [s / f for s, f in zip(sides["schema"], sides["free"])]
    return {"rows": rows, "constrained_rows": constrained_rows, "steps": steps, "repeats": repeats,
            "threads": torch.get_num_threads(), "step_ms": sides,
            "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "grammar_ms_per_step_median": statistics.median(grammar_ms),
            "compile_first_ms": first_ms, "compile_cached_ms_median": statistics.median(cached),
            "compile_cached_ms_max": max(cached), "grammar_tokenizer_s": tokenizer_s,
            "mask_us_median": statistics.median(mask_us)}


class _Side:
    """One running batch of ``rows`` copies of a prompt, the first ``constrained`` of them under :data:`SCHEMA`
    (a row's grammar restarts when it closes, so the batch shape never changes)."""

    def __init__(self, stepper: Any, prompt: list[int], rows: int, constrained: int, grammars: Any) -> None:
        from ..runtime.constrained import ConstrainedSampler
        from ..runtime.sampling import Sampler

        self.stepper, self.grammars = stepper, grammars
        self.fresh = lambda: ConstrainedSampler(Sampler(), grammars.state(SCHEMA))  # noqa: E731
        self.samplers = [self.fresh() if i < constrained else Sampler() for i in range(rows)]
        self.batch, self.logits = stepper.prefill([prompt] * rows, [None] * rows, rows=list(range(rows)))
        self.tokens = [sampler.pick(self.logits[i])[0] for i, sampler in enumerate(self.samplers)]
        self.grammar_ms: list[float] = []

    def step(self) -> float:
        """One decode step and every row's choice; its milliseconds (the grammar rows' share kept apart)."""
        from ..runtime.constrained import ConstrainedSampler

        start = time.perf_counter()
        self.logits = self.stepper.decode(self.batch, self.tokens)
        grammar = 0.0
        for i, sampler in enumerate(self.samplers):
            if isinstance(sampler, ConstrainedSampler) and sampler.complete:
                self.samplers[i] = sampler = self.fresh()
            begin = time.perf_counter()
            self.tokens[i] = sampler.pick(self.logits[i])[0]
            if isinstance(sampler, ConstrainedSampler):
                grammar += time.perf_counter() - begin
        end = time.perf_counter()
        self.grammar_ms.append(1000 * grammar)
        return 1000 * (end - start)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    repeats = range(1, len(result["step_ms"]["free"]) + 1)
    for side, marker in (("free", "o"), ("schema", "s")):
        ax.plot(repeats, result["step_ms"][side], marker=marker, label=f"{side} rows")
    ax.set_xlabel("repeat")
    ax.set_ylabel("median decode step (ms)")
    ax.set_title(f"{result['rows']} rows, {result['constrained_rows']} with a schema: "
                 f"ratio {result['ratio_median']:.3f}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=None, help="base alias or folder (default: the embedded base)")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--constrained-rows", type=int, default=None, help="rows with a schema (default: half)")
    parser.add_argument("--out", default="runs/bench-constrained")
    args = parser.parse_args(argv)
    from .. import AdapterHub

    hub = AdapterHub(args.base, device="cpu") if args.base else AdapterHub(device="cpu")
    result = measure(hub, rows=args.rows, steps=args.steps, repeats=args.repeats,
                     constrained_rows=args.constrained_rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "constrained.json").write_text(json.dumps(result, indent=2))
    plot(result, out / "constrained.png")
    print(json.dumps({k: v for k, v in result.items() if k != "step_ms"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
