"""The serve area: many concurrent HTTP clients over several adapters, against three servers.

Each side (:mod:`.serve_sides`) runs in its own process; this process is the
load generator: ``serve_clients`` clients at once, each sending
``serve_requests`` requests one after another (client ``c``'s ``i``-th request
uses adapter ``(c + i) % serve_adapters``), every prompt ``serve_prompt_tokens``
tokens long, exactly ``serve_new_tokens`` generated (end token ignored), greedy.
Our servers stream (``/generate_stream``), so time to first token is the first
event; the plain PEFT server cannot stream, so its first token arrives with the
whole answer.

>>> result = measure_serve(config, base_name="/tmp/tiny", adapters=adapters)  # doctest: +SKIP
>>> result["speedup"]["vs_peft"] > 4  # doctest: +SKIP
True
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from .harness import Stats

SIDES = ("ours", "ours-unbatched", "peft")
_TEXT = ("The Supplier shall indemnify the Customer against all claims and invoices are payable within thirty "
         "days while the patient reports chest pain and the quarterly revenue rose as operating margins narrowed ")


def measure_serve(config: Any, *, base_name: str, adapters: Sequence[Any], progress: Any = None) -> dict[str, Any]:
    """Requests/s, generated tokens/s, latency and TTFT of every side; speed-ups of ours over the others."""
    from ..base import load_base
    from ..serve.server import free_port

    chosen = {adapter.name: str(adapter.path) for adapter in adapters[:config.serve_adapters]}
    tokenizer = load_base(base_name, device="cpu").tokenizer  # tokenizer only matters; the model is dropped
    prompts = prompts_of_length(tokenizer, config.serve_prompt_tokens, len(chosen))
    result: dict[str, Any] = {"clients": config.serve_clients, "adapters": len(chosen),
                              "requests_per_client": config.serve_requests, "prompt_tokens": config.serve_prompt_tokens,
                              "new_tokens": config.serve_new_tokens, "rows": config.serve_clients, "sides": {}}
    for side in SIDES:
        port = free_port()
        command = [sys.executable, "-m", "adapterhub.bench.serve_sides", side, "--base", base_name,
                   "--adapters", json.dumps(chosen), "--port", str(port), "--rows", str(config.serve_clients),
                   "--device", config.device, "--dtype", config.dtype]
        if config.quantize:
            command += ["--quantize", config.quantize]
        if config.threads:
            command += ["--threads", str(config.threads)]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            if process.stdout.readline().strip() != "ready":
                raise RuntimeError(f"the {side} server did not start: {process.stderr.read()[-2000:]}")
            url = f"http://127.0.0.1:{port}"
            streaming = side != "peft"
            asyncio.run(_load(url, list(chosen), prompts, clients=1, requests=1, new_tokens=2,
                              streaming=streaming))  # warm-up
            result["sides"][side] = asyncio.run(_load(url, list(chosen), prompts, clients=config.serve_clients,
                                                      requests=config.serve_requests,
                                                      new_tokens=config.serve_new_tokens, streaming=streaming))
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        if progress is not None:
            progress.update()
    tokens = {side: data["tokens_per_s"] for side, data in result["sides"].items()}
    result["speedup"] = {"vs_peft": tokens["ours"] / tokens["peft"] if tokens.get("peft") else None,
                         "vs_unbatched": tokens["ours"] / tokens["ours-unbatched"]
                         if tokens.get("ours-unbatched") else None}
    sent = sum(data["requests"] for data in result["sides"].values())
    result["answered_share"] = sum(data["ok"] for data in result["sides"].values()) / sent if sent else None
    return result


def prompts_of_length(tokenizer: Any, length: int, count: int) -> list[str]:
    """``count`` different prompts of ``length`` tokens (decoded from token windows of a fixed text)."""
    ids = tokenizer(_TEXT * (1 + 4 * length // 16), add_special_tokens=False)["input_ids"]
    return [tokenizer.decode(ids[i * 3:i * 3 + length]) for i in range(count)]


async def _load(url: str, adapters: list[str], prompts: list[str], *, clients: int, requests: int, new_tokens: int,
                streaming: bool) -> dict[str, Any]:
    """Client ``c``'s ``i``-th request uses adapter (and prompt) ``(c + i) % len(adapters)``."""
    schedule = [[(adapters[(index + turn) % len(adapters)], prompts[(index + turn) % len(adapters)])
                 for turn in range(requests)] for index in range(clients)]
    return await drive(url, schedule, new_tokens=new_tokens, streaming=streaming)


async def drive(url: str, schedule: Sequence[Sequence[tuple[str, str]]], *, new_tokens: int,
                streaming: bool) -> dict[str, Any]:
    """Send every client's ``(adapter, prompt)`` requests one after another, all clients at once.

    LoRAX bodies (``adapter_id``), exactly ``new_tokens`` generated (end token ignored), greedy; streamed
    (``/generate_stream``: the first event is the first token) or not (``/generate``: it comes with the answer).

    Returns:
        ``requests``, ``ok``, ``errors`` (with up to 3 ``error_examples``), ``seconds`` (wall), ``requests_per_s``,
        ``tokens_per_s``, ``generated_tokens``, ``latency_ms`` and ``ttft_ms`` (:class:`Stats` dicts).
    """
    import httpx

    latencies: list[float] = []
    firsts: list[float] = []
    generated = [0]
    errors: list[str] = []
    limits = httpx.Limits(max_connections=len(schedule) + 4, max_keepalive_connections=len(schedule) + 4)

    async def client(http: httpx.AsyncClient, requests: Sequence[tuple[str, str]]) -> None:
        for adapter, prompt in requests:
            body = {"inputs": prompt, "parameters": {"adapter_id": adapter, "max_new_tokens": new_tokens,
                                                     "ignore_eos_token": True, "details": True}}
            start = time.perf_counter()
            try:
                first, count = await (_stream(http, url, body) if streaming else _whole(http, url, body))
            except Exception as error:  # noqa: BLE001 - counted and reported, never hidden
                errors.append(f"{type(error).__name__}: {error}"[:300])
                continue
            end = time.perf_counter()
            latencies.append(end - start)
            firsts.append((first or end) - start)
            generated[0] += count

    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http, requests) for requests in schedule))
        wall = time.perf_counter() - started
    ok = len(latencies)
    return {"requests": sum(len(requests) for requests in schedule), "ok": ok, "errors": len(errors),
            "error_examples": errors[:3], "seconds": wall, "requests_per_s": ok / wall,
            "tokens_per_s": generated[0] / wall, "generated_tokens": generated[0],
            "latency_ms": Stats.of(latencies).scaled(1e3).to_dict() if latencies else None,
            "ttft_ms": Stats.of(firsts).scaled(1e3).to_dict() if firsts else None}


async def _stream(http: Any, url: str, body: dict[str, Any]) -> tuple[float | None, int]:
    first, count = None, 0
    async with http.stream("POST", url + "/generate_stream", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {(await response.aread())[:200]!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            event = json.loads(line[5:])
            if "error" in event:
                raise RuntimeError(str(event["error"]))
            first = first or time.perf_counter()
            count += 1
    return first, count


async def _whole(http: Any, url: str, body: dict[str, Any]) -> tuple[float | None, int]:
    response = await http.post(url + "/generate", json=body)
    if response.status_code != 200:
        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
    return None, int(response.json()["details"]["generated_tokens"])


def render(result: dict[str, Any]) -> list[str]:
    """The report section: one row per side, and the speed-ups."""
    from .markdown import format_value, table

    names = {"ours": "adapterhub (batching)", "ours-unbatched": "adapterhub, batching off", "peft": "plain PEFT server"}
    rows = []
    for side, data in result["sides"].items():
        latency, ttft = data.get("latency_ms") or {}, data.get("ttft_ms") or {}
        rows.append([names.get(side, side), format_value(data["requests_per_s"]), format_value(data["tokens_per_s"]),
                     format_value(latency.get("p50")), format_value(latency.get("p99")), format_value(ttft.get("p50")),
                     format_value(ttft.get("p99")), data["errors"]])
    speedup = result.get("speedup") or {}
    return [f"{result['clients']} concurrent clients × {result['requests_per_client']} requests over "
            f"{result['adapters']} LoRA adapters; {result['prompt_tokens']}-token prompts, exactly "
            f"{result['new_tokens']} new tokens, greedy. The plain PEFT server does not stream: its first token "
            "arrives with the whole answer.", "",
            *table(["server", "req/s", "tokens/s", "p50 ms", "p99 ms", "TTFT p50 ms", "TTFT p99 ms", "errors"], rows),
            f"adapterhub is **{format_value(speedup.get('vs_peft'), '×')}** plain PEFT's tokens/s and "
            f"**{format_value(speedup.get('vs_unbatched'), '×')}** its own with batching off.", ""]
