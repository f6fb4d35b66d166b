"""The hardening soak: well-behaved streaming clients beside an attacker cycling every bad input of issue 32, against
a real server. Reports failed well-behaved requests, ``/health`` latency, the server's RSS growth and the growth of
``/metrics`` (targets: 0, p99 <= 100 ms, <= 50 MB, <= 10 %).

Run it (the server in its own process, started here over a tiny random llama and a registry made for it)::

    python -m adapterhub.bench.soak --seconds 60 --clients 64 --out runs/soak/soak.json

>>> result = asyncio.run(run_soak("http://127.0.0.1:8000", seconds=5, clients=8))  # doctest: +SKIP
>>> result["well_behaved"]["failed"]  # doctest: +SKIP
0
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import urlparse

JSON = {"content-type": "application/json"}
MODELS = ("legal", "legal@1", "medical", "base")  # what well-behaved clients ask for
_HUGE = "chest pain " * (6 * 2**20 // 11)  # ~6 MiB of prompt, under the 8 MiB body limit


def _attacks(url: str) -> list[tuple[str, Callable[[Any, int], Awaitable[int]]]]:
    """``(name, attack(client, round) -> HTTP status)`` for every bad input (issue 32 items 1-11)."""

    def body(path: str, payload: Any, **headers: str) -> Callable[[Any, int], Awaitable[int]]:
        async def send(client: Any, _: int) -> int:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            return (await client.post(url + path, content=data, headers={**JSON, **headers})).status_code
        return send

    def varying(path: str, make: Callable[[int], Any]) -> Callable[[Any, int], Awaitable[int]]:
        async def send(client: Any, n: int) -> int:
            return (await client.post(url + path, content=json.dumps(make(n)).encode(), headers=JSON)).status_code
        return send

    async def chunked(client: Any, _: int) -> int:
        async def chunks() -> Any:
            yield b'{"model": "legal", "prompt": "'
            for _ in range(10):
                yield b"a" * 2**20
            yield b'"}'
        return (await client.post(url + "/v1/completions", content=chunks(), headers=JSON)).status_code

    async def foreign_host(client: Any, _: int) -> int:
        return (await client.get(url + "/v1/models", headers={"host": "evil.example"})).status_code

    x = {"prompt": "x", "max_tokens": 2}
    return [
        ("tiny_temperature", body("/v1/completions", {"model": "legal", **x, "temperature": 1e-300})),
        ("tiny_top_p", body("/v1/completions", {"model": "legal", **x, "temperature": 1, "top_p": 1e-300})),
        ("huge_seed", body("/v1/completions", {"model": "legal", **x, "temperature": 1, "seed": 2**70})),
        ("lorax_seed", body("/generate", {"inputs": "x", "parameters": {"adapter_id": "legal", "do_sample": True,
                                                                         "seed": 2**64}})),
        ("lorax_temperature", body("/generate", {"inputs": "x", "parameters": {"temperature": 1e-300}})),
        ("overflowing_mix", body("/v1/completions", {"model": "legal:1e38+legal@1:-1e38", **x})),
        ("huge_prompt", body("/v1/completions", {"model": "legal", "prompt": _HUGE, "max_tokens": 2})),
        ("version_spelling", varying("/v1/completions", lambda n: {"model": f"legal@{'0' * (n % 50 + 1)}1", **x})),
        ("chunked_10mib", chunked),
        ("text_plain", body("/v1/completions", {"model": "legal", **x}, **{"content-type": "text/plain"})),
        ("foreign_host", foreign_host),
        ("probe_paths", body("/v1/load_lora_adapter", {"lora_name": "probe", "lora_path": "/etc"})),
        ("distinct_mixes", varying("/v1/completions",
                                   lambda n: {"model": f"legal:{0.1 + (n % 997) / 1000:.3f}+legal@2:0.5", **x})),
        ("deep_json", body("/v1/completions", b"[" * 100_000 + b"]" * 100_000)),
        ("lone_surrogate", body("/v1/completions", b'{"model": "legal", "prompt": "\\ud800"}')),
        ("bad_lora_name", varying("/v1/load_lora_adapter",
                                  lambda n: {"lora_name": ["a:1+b:1", "../x", "x\ny", "base", "legal@7"][n % 5],
                                             "lora_path": "/tmp"})),
        ("classify_20000", body("/v1/classify", {"model": "legal", "input": ["good"] * 20_000})),
        ("classify_heavy_mix", body("/v1/classify", {"model": "legal:1e6+legal@2:1", "input": "good"})),
    ]


async def _well_behaved(client: Any, url: str, end: float, tally: dict[str, Any], rng: random.Random) -> None:
    """Greedy or seeded streaming completions until ``end``; each must finish with a finish reason."""
    while time.monotonic() < end:
        model = rng.choice(MODELS)
        payload = {"model": model, "prompt": rng.choice(["Patient reports chest pain", "The contract says"]),
                   "max_tokens": rng.randint(4, 16), "stream": True,
                   **({"temperature": 0} if rng.random() < 0.5 else {"temperature": 0.8, "seed": rng.randint(0, 99)})}
        finish = None
        try:
            async with client.stream("POST", url + "/v1/completions", content=json.dumps(payload),
                                     headers=JSON) as response:
                status = response.status_code
                async for line in response.aiter_lines():
                    if line.startswith("data: {"):
                        event = json.loads(line[6:])
                        if "error" in event:
                            finish = "error:" + str(event["error"].get("code"))
                        elif event["choices"] and event["choices"][0]["finish_reason"]:
                            finish = event["choices"][0]["finish_reason"]
        except Exception as error:  # noqa: BLE001 - a failed request is what the soak counts
            status, finish = 0, f"exception:{type(error).__name__}"
        ok = status == 200 and finish in ("stop", "length")
        tally["ok" if ok else "failed"] += 1
        if not ok and len(tally["failures"]) < 20:
            tally["failures"].append({"model": model, "status": status, "finish": finish})


async def _attacker(client: Any, url: str, end: float, statuses: dict[str, dict[str, int]],
                    rounds: int | None = None) -> None:
    attacks = _attacks(url)
    for n in itertools.count() if rounds is None else range(rounds):
        for name, attack in attacks:
            if time.monotonic() >= end:
                return
            try:
                status = str(await attack(client, n))
            except Exception as error:  # noqa: BLE001 - the server may drop an attacker's connection
                status = type(error).__name__
            seen = statuses.setdefault(name, {})
            seen[status] = seen.get(status, 0) + 1


async def _slowloris(url: str, end: float, held: int) -> int:
    """Keep up to ``held`` connections sending half a request's headers; returns how many the server closed."""
    parsed = urlparse(url)
    closed = 0
    loop = asyncio.get_running_loop()
    while time.monotonic() < end:
        socks = []
        for _ in range(held):
            sock = socket.socket()
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, (parsed.hostname, parsed.port))
                await loop.sock_sendall(sock, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                socks.append(sock)
            except OSError:
                sock.close()
        for sock in socks:
            try:
                remaining = max(0.1, end - time.monotonic())
                if await asyncio.wait_for(loop.sock_recv(sock, 64), remaining) == b"":
                    closed += 1
            except (asyncio.TimeoutError, OSError):
                pass
            finally:
                sock.close()
    return closed


def _probe_health(url: str, seconds: float, out: Any) -> None:
    """``GET /health`` every 50 ms for ``seconds`` from its own process (the clients' event loop never delays it);
    puts the latencies (ms) on ``out``."""
    import httpx

    latencies = []
    end = time.monotonic() + seconds
    with httpx.Client(timeout=60) as client:
        while time.monotonic() < end:
            started = time.perf_counter()
            if client.get(url + "/health").status_code == 200:
                latencies.append((time.perf_counter() - started) * 1e3)
            time.sleep(0.05)
    out.put(latencies)


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def run_soak(url: str, *, seconds: float, clients: int, pid: int | None = None, warmup: float = 3.0,
                   slowloris: int = 50, seed: int = 0, attackers: bool = True) -> dict[str, Any]:
    """Drive ``url`` for ``seconds`` (after one round of every attack, then ``warmup`` seconds of the same
    traffic) and return the figures.

    ``pid``: the server's process for RSS (``None``: this process). ``attackers=False``: the well-behaved
    clients alone (the baseline the attacker's effect is read against). Clients drop idle connections after
    2 s, before the server's 5 s keep-alive timeout closes them (a client reusing a connection the server is
    closing sees a reset that is no server failure).
    """
    import httpx

    pid = pid or os.getpid()
    limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients + 8, keepalive_expiry=2.0)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client, \
            httpx.AsyncClient(timeout=120) as attacker, httpx.AsyncClient(timeout=120) as prober:
        rngs = [random.Random(seed + i) for i in range(clients)]
        warm: dict[str, Any] = {"ok": 0, "failed": 0, "failures": []}
        if attackers:  # every attack's code path runs once before the "before" figures (first-use allocations)
            await _attacker(attacker, url, float("inf"), {}, rounds=1)
        warm_end = time.monotonic() + warmup
        await asyncio.gather(*(_well_behaved(client, url, warm_end, warm, rng) for rng in rngs[:4]),
                             _attacker(attacker, url, warm_end, {}))
        metrics_before = len((await prober.get(url + "/metrics")).content)
        rss_before = rss_bytes(pid)
        tally: dict[str, Any] = {"ok": 0, "failed": 0, "failures": []}
        statuses: dict[str, dict[str, int]] = {}
        context = multiprocessing.get_context("spawn")
        out = context.Queue()
        probe = context.Process(target=_probe_health, args=(url, seconds, out), daemon=True)
        probe.start()
        end = time.monotonic() + seconds
        attack = [_attacker(attacker, url, end, statuses), _slowloris(url, end, slowloris)] if attackers else []
        *_, attack_results = await asyncio.gather(*(_well_behaved(client, url, end, tally, rng) for rng in rngs),
                                                  asyncio.gather(*attack))
        latencies = await asyncio.get_running_loop().run_in_executor(None, out.get)
        probe.join(30)
        metrics_after = len((await prober.get(url + "/metrics")).content)
    rss_after = rss_bytes(pid)
    ordered = sorted(latencies) or [0.0]
    closed = attack_results[1] if attackers else 0
    return {"seconds": seconds, "clients": clients, "attackers": attackers, "well_behaved": tally, "attacks": statuses,
            "attack_internal_errors": sum(seen.get("500", 0) for seen in statuses.values()),
            "health_ms": {"n": len(latencies), "p50": statistics.median(ordered),
                          "p99": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], "max": ordered[-1]},
            "rss_mb": {"before": rss_before / 2**20, "after": rss_after / 2**20,
                       "growth": (rss_after - rss_before) / 2**20},
            "metrics_bytes": {"before": metrics_before, "after": metrics_after,
                              "growth": metrics_after / max(1, metrics_before) - 1},
            "slowloris_closed_by_server": closed}


def _prepare(root: Path) -> tuple[Path, Path]:
    """A tiny random llama and a registry (legal@1/@2 LoRA, medical prefix) under ``root``."""
    from ..base import load_base
    from ..base.tiny import make_tiny_llama
    from ..registry import Registry
    from ..runtime.testing import make_random_adapters

    base_dir = make_tiny_llama(root / "base")
    base = load_base(str(base_dir), device="cpu")
    lora = make_random_adapters(base, root / "made", count=2, r=4, prefix="lora")
    prefix = make_random_adapters(base, root / "made", count=1, method="prefix", num_virtual_tokens=5, prefix="pre")
    registry = Registry(root / "registry")
    registry.add(lora[0], "legal", base=base)
    registry.add(lora[1], "legal", base=base)
    registry.add(prefix[0], "medical", base=base)
    return base_dir, registry.root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--out", default=None, help="write the result JSON here")
    parser.add_argument("--no-attack", action="store_true", help="well-behaved clients only (the baseline)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        base_dir, registry_root = _prepare(Path(tmp))
        env = {**os.environ, "ADAPTERHUB_HOME": str(Path(tmp) / "home")}
        server = subprocess.Popen([sys.executable, "-m", "adapterhub", "serve", "--base", str(base_dir),
                                   "--base-name", "base", "--registry", str(registry_root), "--port", str(args.port),
                                   "--max-new-tokens", "64"], env=env, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{args.port}"
        try:
            _wait_ready(url, server)
            result = asyncio.run(run_soak(url, seconds=args.seconds, clients=args.clients, pid=server.pid,
                                          attackers=not args.no_attack))
        finally:
            server.terminate()
            server.wait(60)
    result["command"] = "python -m adapterhub.bench.soak " + " ".join(argv if argv is not None else sys.argv[1:])
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(text)
    return 0


def _wait_ready(url: str, server: subprocess.Popen) -> None:
    import httpx

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the server on {url} did not start")


if __name__ == "__main__":
    sys.exit(main())
