"""Timing and memory measurement: warm-up, repeats, robust statistics.

Every figure in the benchmark is a :class:`Stats` over repeated runs after a
warm-up. Cases that are compared as a ratio are timed *interleaved*
(round-robin: case A, B, C, A, B, C, ...) so that drift on a shared machine
(another process waking up, thermal throttling) hits all of them alike.

>>> stats = Stats.of([3.0, 1.0, 2.0])
>>> stats.median, stats.n
(2.0, 3)
>>> time_calls(lambda: None, warmup=1, repeats=5).n
5
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping

from ..memory import peak_rss_bytes


@dataclass(frozen=True)
class Stats:
    """Summary of repeated measurements (any unit: seconds, bytes, tokens/s).

    ``p50`` equals ``median``; ``p99`` uses linear interpolation between the
    closest ranks, so with few samples it approaches the maximum.
    """

    median: float
    p50: float
    p99: float
    mean: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, samples: list[float]) -> Stats:
        """Summarise ``samples`` (at least one).

        Raises:
            ValueError: ``samples`` is empty.
        """
        if not samples:
            raise ValueError("Stats.of needs at least one sample")
        ordered = sorted(float(s) for s in samples)
        median = statistics.median(ordered)
        return cls(median=median, p50=median, p99=percentile(ordered, 99), mean=statistics.fmean(ordered),
                   min=ordered[0], max=ordered[-1], n=len(ordered))

    def scaled(self, factor: float) -> Stats:
        """The same statistics multiplied by ``factor`` (e.g. seconds -> ms)."""
        return Stats(*(value * factor for value in (self.median, self.p50, self.p99, self.mean, self.min, self.max)),
                     n=self.n)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def percentile(ordered: list[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of an ascending list, linearly interpolated."""
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class Timer:
    """Wall-clock timing that waits for the accelerator before reading the clock.

    Args:
        device: ``"cpu"`` or a CUDA device string; on CUDA each reading is
            preceded by ``torch.cuda.synchronize()`` so queued kernels are counted.
    """

    def __init__(self, device: str = "cpu") -> None:
        self.cuda = str(device).startswith("cuda")

    def now(self) -> float:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        return time.perf_counter()

    def call(self, fn: Callable[[], Any]) -> float:
        """Seconds one call of ``fn`` takes."""
        start = self.now()
        fn()
        return self.now() - start


def time_calls(fn: Callable[[], Any], *, warmup: int, repeats: int, timer: Timer | None = None) -> Stats:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times timed; seconds per call."""
    return time_interleaved({"case": fn}, warmup=warmup, repeats=repeats, timer=timer)["case"]


def time_interleaved(cases: Mapping[str, Callable[[], Any]], *, warmup: int, repeats: int,
                     timer: Timer | None = None, progress: Callable[[], None] | None = None) -> dict[str, Stats]:
    """Time several cases round-robin; seconds per call for each case.

    Args:
        cases: ``{name: zero-argument callable}``.
        warmup: untimed rounds first (each case once per round).
        repeats: timed rounds.
        timer: a :class:`Timer` (CUDA-aware); default CPU wall clock.
        progress: called after every timed round (e.g. a progress bar's update).

    Returns:
        ``{name: Stats}`` in seconds.
    """
    timer = timer or Timer()
    for _ in range(warmup):
        for fn in cases.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            samples[name].append(timer.call(fn))
        if progress is not None:
            progress()
    return {name: Stats.of(values) for name, values in samples.items()}


def cuda_allocated_bytes(device: str) -> int:
    """Bytes held by live tensors on the CUDA device now (0 on CPU)."""
    if not str(device).startswith("cuda"):
        return 0
    import torch

    return int(torch.cuda.memory_allocated(device))


def reset_peak_memory(device: str) -> None:
    """Start a fresh peak-memory window on CUDA (no-op on CPU, where the peak is per process)."""
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: str) -> int:
    """Peak accelerator memory allocated since the last reset on CUDA, else the process's peak RSS."""
    if str(device).startswith("cuda"):
        import torch

        return int(torch.cuda.max_memory_allocated(device))
    return peak_rss_bytes()


def ratio(numerator: Stats | float, denominator: Stats | float) -> float:
    """Median ratio of two measurements (``numerator / denominator``)."""
    top = numerator.median if isinstance(numerator, Stats) else float(numerator)
    bottom = denominator.median if isinstance(denominator, Stats) else float(denominator)
    return top / bottom if bottom else float("inf")
