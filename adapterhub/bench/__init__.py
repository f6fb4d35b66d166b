"""``adapterhub bench``: adapterhub against plain PEFT, side by side, in one run.

Measures switch and load latency, forward and generation throughput, training
throughput and memory for our runtime and recipe trainer and for plain PEFT,
on the same machine with the same adapters, and two of our trainings at once
before and after CPU seats (``concurrency.py``), and writes ``bench.json``,
``bench.md`` and PNG plots. Every figure is the median of repeated runs after
warm-up; the report checks each promised target (met / MISSED).

>>> from adapterhub.bench import BenchConfig, run_bench
>>> report = run_bench(BenchConfig.preset(quick=True, out="bench-out/quick"))  # doctest: +SKIP
>>> report["files"]  # doctest: +SKIP
['bench.json', 'bench.md', 'forward.png', 'latency.png', 'memory.png', 'throughput.png']
"""

from __future__ import annotations

from .config import AREAS, BenchConfig
from .runner import run_bench

__all__ = ["AREAS", "BenchConfig", "run_bench"]
