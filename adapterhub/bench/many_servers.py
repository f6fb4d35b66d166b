"""The two servers of the many-adapters bench, each a real process: start, wait until ready, read counters, stop.

* ours: ``python -m adapterhub serve`` over the bench registry; counters and gauges come from ``/metrics``
  (every ``adapterhub_*`` counter summed over its labels, per ``tier`` label where one exists);
* peft: ``python -m adapterhub.bench.serve_sides peft-lru``; they come from its ``/stats``.

>>> server = ServerProcess(ours_command(config, "smollm2-135m-instruct", root), log=Path("ours.log"))  # doctest: +SKIP
>>> server.start(); server.wait_ready(); server.counters()["loads"]  # doctest: +SKIP
0
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

READY_TIMEOUT_S = 600.0
_LOADS, _EVICTIONS = "adapterhub_adapter_loads", "adapterhub_adapter_evictions"


def _threads(config: Any) -> list[str]:
    return ["--threads", str(config.threads)] if config.threads else []


def ours_command(config: Any, base_name: str, registry: Path) -> Callable[[int], list[str]]:
    """``adapterhub serve`` over ``registry`` with ``many_resident`` device slots and ``many_clients`` rows."""
    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "adapterhub", "serve", "--base", base_name, "--registry", str(registry),
                "--port", str(port), "--device", config.device, "--max-resident", str(config.many_resident),
                "--max-batch-rows", str(config.many_clients), "--max-queue", "4096",
                "--max-new-tokens", str(max(64, config.many_new_tokens)), *_threads(config)]
    return command


def peft_command(config: Any, base_name: str, registry: Path) -> Callable[[int], list[str]]:
    """The plain PEFT server over ``registry`` keeping ``many_resident`` adapters (LRU)."""
    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "adapterhub.bench.serve_sides", "peft-lru", "--base", base_name,
                "--registry", str(registry), "--resident", str(config.many_resident), "--port", str(port),
                "--device", config.device, "--dtype", config.dtype, *_threads(config)]
    return command


class ServerProcess:
    """One server in its own process, its output in ``log``."""

    def __init__(self, command: Callable[[int], list[str]], log: Path) -> None:
        self._command, self._log = command, log
        self._process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> None:
        from ..serve.server import free_port

        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        tree = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [tree, os.environ.get("PYTHONPATH")]))}
        with open(self._log, "wb") as output:
            self._process = subprocess.Popen(self._command(port), stdout=output, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Wait until ``GET /ready`` answers 200.

        Raises:
            RuntimeError: the process exited or did not get ready in time (the end of its output is in the message).
        """
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                break
            try:
                if httpx.get(self.url + "/ready", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        tail = self._log.read_text(errors="replace")[-2000:] if self._log.is_file() else ""
        raise RuntimeError(f"server {' '.join(self._command(0)[:5])} did not get ready: {tail}")

    def counters(self) -> dict[str, float]:
        """``loads``, ``evictions`` (and ``hits`` for the PEFT side), plus every tier series, now."""
        return self._read()[0]

    def gauges(self) -> dict[str, float]:
        """The resident counts and bytes now (``resident``, ``resident_bytes``, per tier where reported)."""
        return self._read()[1]

    def _read(self) -> tuple[dict[str, float], dict[str, float]]:
        import httpx

        try:
            stats = httpx.get(self.url + "/stats", timeout=30)
            if stats.status_code == 200:
                data = stats.json()
                return ({key: data[key] for key in ("hits", "loads", "evictions")},
                        {key: data[key] for key in ("resident", "resident_bytes")})
            return parse_metrics(httpx.get(self.url + "/metrics", timeout=30).text)
        except httpx.HTTPError:
            return {}, {}

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


def parse_metrics(text: str) -> tuple[dict[str, float], dict[str, float]]:
    """Counters and gauges of our ``/metrics`` text: totals of loads and evictions, resident count and bytes,
    and every series with a ``tier`` label as ``<family>[<tier>]``.

    >>> parse_metrics('adapterhub_adapter_loads_total{adapter="a"} 2.0\\nadapterhub_resident_adapters 1.0\\n')
    ({'loads': 2.0, 'evictions': 0.0}, {'resident': 1.0})
    """
    from prometheus_client.parser import text_string_to_metric_families

    counters: dict[str, float] = {"loads": 0.0, "evictions": 0.0}
    gauges: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue  # a counter's creation time
            counter = family.type == "counter" or sample.name.endswith("_total")
            name = sample.name.removesuffix("_total")
            if name == _LOADS and "tier" not in sample.labels:
                counters["loads"] += sample.value
            elif name == _EVICTIONS and "tier" not in sample.labels:
                counters["evictions"] += sample.value
            elif name == "adapterhub_resident_adapters" and not sample.labels:
                gauges["resident"] = sample.value
            elif "tier" in sample.labels and (counter or family.type == "gauge"):
                target = counters if counter else gauges
                key = f"{name}[{sample.labels['tier']}]"
                target[key] = target.get(key, 0.0) + sample.value
    return counters, gauges
