"""What the benchmark measures and how hard: sizes, counts, repeats.

Three presets: the full CPU run (default base, issue sizes), ``quick`` (the
tiny llama, few adapters and repeats: a smoke test, never a speed claim) and
``gpu_sizes`` (adds a 64 × 256 batch and a 32-adapter mixed batch).

>>> config = BenchConfig.preset(quick=True)
>>> config.load_count, config.mixed_counts
(4, (2, 8))
>>> BenchConfig.preset(gpu_sizes=True).forward_shapes
((8, 64), (64, 256))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError

AREAS = ("switch", "load", "forward", "generation", "training", "memory", "serve", "encoder", "methods", "accuracy",
         "concurrency", "many")
DEFAULT_OUT = Path("bench-out")


@dataclass(frozen=True)
class BenchConfig:
    """Every knob of one benchmark run.

    Attributes:
        base: alias, local directory or Hub id; ``None`` is the default base
            (the tiny llama, built in the output folder, when ``quick``).
        dtype, quantize, device: as :func:`adapterhub.load_base` takes them.
        threads: ``torch.set_num_threads`` value; ``None`` keeps torch's default.
        out: output folder for ``bench.json``, ``bench.md`` and the PNGs (nothing else is written there).
        work: folder for generated adapters, the bench registry and the tiny model
            (``None``: ``$ADAPTERHUB_HOME/bench``); adapters are reused across runs.
        quick: smoke-test sizes on the tiny model.
        rank: LoRA rank of the generated adapters (all linear layers but the LM head).
        warmup, repeats: untimed and timed rounds of every timed case.
        switch_resident: adapters resident while switching is timed.
        switch_calls: timed switches per side (p50 and p99 come from these).
        load_count: adapters loaded one after another; the 1st and this one are reported.
        load_repeats: how often the whole load series is repeated.
        forward_shapes: ``(batch, tokens)`` of the forward-throughput batches.
        mixed_counts: adapters per mixed batch.
        generation_domains: domains in the mixed generation batch (one run per entry).
        generation_rows_per_domain: prompts per domain in that batch.
        generation_new_tokens: new tokens per row (generation runs exactly this long).
        decode_steps: greedy decode steps per timed run of the decode cases (ours only; rows and the
            long-row prefill shape are the first forward shape's).
        decode_mixed_counts: adapters the mixed decode batches interleave (the most also mixes the prefill).
        memory_counts: resident adapter counts for the memory comparison.
        train_steps, train_batch, train_max_length: the training comparison's size.
        train_repeats: runs per trainer, alternating ours / PEFT (the median run is reported).
        train_recipe: the recipe both trainers follow (``None``: the shipped finance recipe).
        accuracy_threshold: the validation accuracy the time-to-accuracy area times both trainers to.
        accuracy_eval_every: optimizer steps between its validation evaluations (and the last step).
        accuracy_eval_rows: validation rows each of those evaluations scores (``None``: all).
        accuracy_max_steps: cap on its optimizer steps (``None``: the recipe's own schedule).
        serve_clients, serve_adapters: concurrent HTTP clients and the adapters they spread over.
        serve_prompt_tokens, serve_new_tokens: prompt length and generated tokens per request.
        serve_requests: requests each client sends, one after another.
        concurrency_settle_s: the longest the concurrency area waits, before a leg whose threads adapterhub
            chooses, for the 1-minute load average to stop counting the work that just ended (0: never).
        many_counts: the numbers of registered adapters the many-adapters sweep runs at (the largest: its headline).
        many_clients, many_resident: its concurrent clients and device-resident adapters (both servers).
        many_alpha: the Zipf exponent of its skewed traffic.
        many_prompt_tokens, many_new_tokens: its prompt length and generated tokens per request.
        many_requests, many_warmup_requests: timed and untimed (first) requests of each of its legs.
        many_repeats: how often its headline legs run (the sides alternating).
        many_peft_repeats: how many of those repeats include the plain PEFT server (``None``: all; it serves one
            request at a time, so on a small CPU its legs take several times ours).
        many_registry_entries: entries of the registry its registry part times.
        areas: which areas to run (subset of :data:`AREAS`).
    """

    base: str | None = None
    dtype: str = "auto"
    quantize: str | None = None
    device: str = "auto"
    threads: int | None = None
    out: Path = DEFAULT_OUT
    work: Path | None = None
    quick: bool = False
    rank: int = 16
    warmup: int = 2
    repeats: int = 5
    switch_resident: int = 8
    switch_calls: int = 200
    load_count: int = 16
    load_repeats: int = 3
    forward_shapes: tuple[tuple[int, int], ...] = ((8, 64),)
    mixed_counts: tuple[int, ...] = (2, 4, 8)
    generation_domains: tuple[int, ...] = (3,)
    generation_rows_per_domain: int = 2
    generation_new_tokens: int = 32
    decode_steps: int = 16
    decode_mixed_counts: tuple[int, ...] = (3, 8)
    memory_counts: tuple[int, ...] = (1, 8, 32)
    train_steps: int = 8
    train_repeats: int = 3
    train_batch: int = 8
    train_max_length: int = 256
    train_recipe: Path | None = None
    accuracy_threshold: float = 0.85
    accuracy_eval_every: int = 8
    accuracy_eval_rows: int | None = None
    accuracy_max_steps: int | None = None
    serve_clients: int = 32
    serve_adapters: int = 8
    serve_prompt_tokens: int = 64
    serve_new_tokens: int = 32
    serve_requests: int = 2
    concurrency_settle_s: float = 120.0
    many_counts: tuple[int, ...] = (1, 8, 64, 256, 1000)
    many_clients: int = 32
    many_resident: int = 32
    many_alpha: float = 1.0
    many_prompt_tokens: int = 64
    many_new_tokens: int = 32
    many_requests: int = 96
    many_warmup_requests: int = 64
    many_repeats: int = 3
    many_peft_repeats: int | None = None
    many_registry_entries: int = 10_000
    areas: tuple[str, ...] = AREAS

    def __post_init__(self) -> None:
        unknown = [area for area in self.areas if area not in AREAS]
        if unknown:
            raise ConfigError(f"unknown bench area(s) {unknown}; choose from {', '.join(AREAS)}")
        if self.warmup < 0 or self.repeats < 1 or self.concurrency_settle_s < 0:
            raise ConfigError(f"need warmup >= 0, repeats >= 1 and concurrency_settle_s >= 0, got warmup={self.warmup}, "
                              f"repeats={self.repeats}, concurrency_settle_s={self.concurrency_settle_s}")
        if (min(self.many_counts, default=0) < 1 or min(self.many_clients, self.many_resident, self.many_requests,
                                                          self.many_repeats, self.many_new_tokens) < 1
                or self.many_warmup_requests < 0 or self.many_alpha <= 0 or self.many_registry_entries < 1):
            raise ConfigError("the many-adapters options need counts, clients, resident, requests, repeats, new tokens "
                              "and registry entries >= 1, warm-up requests >= 0 and alpha > 0")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be a positive integer, got {self.threads}")
        if not 0.0 <= self.accuracy_threshold <= 1.0 or self.accuracy_eval_every < 1 or any(
                value is not None and value < 1 for value in (self.accuracy_eval_rows, self.accuracy_max_steps)):
            raise ConfigError(f"need 0 <= accuracy_threshold <= 1 and accuracy_eval_every, accuracy_eval_rows, "
                              f"accuracy_max_steps >= 1, got {self.accuracy_threshold}, {self.accuracy_eval_every}, "
                              f"{self.accuracy_eval_rows}, {self.accuracy_max_steps}")

    @classmethod
    def preset(cls, *, quick: bool = False, gpu_sizes: bool = False, **overrides: Any) -> BenchConfig:
        """The full, quick or GPU-sized configuration, with ``overrides`` applied last.

        Raises:
            ConfigError: an override names no field, or a value is out of range.
        """
        values: dict[str, Any] = {}
        if quick:
            # one thread: tiny matmuls gain nothing from more, and OpenMP threads on a busy machine
            # stall each other (a 5 ms forward can take 300 ms), which would make the smoke test slow
            values.update(quick=True, threads=1, warmup=1, repeats=3, switch_calls=24, load_count=4, load_repeats=1,
                          mixed_counts=(2, 8), generation_rows_per_domain=1, generation_new_tokens=4, decode_steps=4,
                          memory_counts=(1, 8), train_steps=2, train_batch=4, train_repeats=1, serve_clients=8,
                          serve_adapters=4, serve_prompt_tokens=16, serve_new_tokens=8, serve_requests=1,
                          accuracy_eval_every=2, accuracy_eval_rows=8, accuracy_max_steps=4, concurrency_settle_s=0.0,
                          many_counts=(1, 6), many_clients=4, many_resident=2, many_prompt_tokens=16,
                          many_new_tokens=4, many_requests=8, many_warmup_requests=4, many_repeats=1,
                          many_registry_entries=200)
        if gpu_sizes:
            values.update(forward_shapes=((8, 64), (64, 256)), mixed_counts=(2, 4, 8, 32),
                          generation_domains=(3, 32), memory_counts=(1, 8, 32), train_batch=32)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"unknown bench option(s) {unknown}; known: {', '.join(sorted(known))}")
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)

    @property
    def adapters_needed(self) -> int:
        """How many distinct adapters the selected areas use."""
        counts = [self.switch_resident, *self.mixed_counts, *self.generation_domains, *self.memory_counts,
                  *self.decode_mixed_counts]
        if "load" in self.areas:
            counts.append(self.load_count)
        if "serve" in self.areas:
            counts.append(self.serve_adapters)
        return max(counts)

    @property
    def work_dir(self) -> Path:
        """Where generated adapters, the registry and the tiny model live."""
        from ..paths import home

        return Path(self.work) if self.work is not None else home() / "bench"

    def to_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["out"] = str(self.out)
        data["work"] = str(self.work_dir)
        data["train_recipe"] = None if self.train_recipe is None else str(self.train_recipe)
        return data


def default_base(config: BenchConfig, work: Path) -> str:
    """The base a run uses when ``config.base`` is unset: the embedded default, or with ``quick`` the tiny Llama
    (made once under ``work``)."""
    from ..base import embedded

    if not config.quick:
        return embedded.DEFAULT_ALIAS
    from ..base.tiny import make_tiny_llama

    path = work / "tiny-llama"
    if not (path / "config.json").is_file():
        make_tiny_llama(path)
    return str(path)
