"""Serving throughput under adapter churn, and load latency by tier: the figures of issue 28's tiers note.

    # throughput: N adapters, Zipf(alpha) traffic from C concurrent HTTP clients (LoRAX /generate) against `adapterhub serve`
    # (its own process, --max-resident K), beside the same requests on one adapter (the ceiling); --code runs
    # another checkout's server (e.g. the code before this change) side by side
    python scripts/zipf_churn.py churn --base tiny --adapters 200 --max-resident 8 --clients 16 --repeat 3 \
        --code before=/tmp/before --code after=.

    # latency: a rank-16 all-linear adapter made device-resident from the host tier vs from disk
    python scripts/zipf_churn.py latency --base smollm2-135m-instruct --repeat 20

Prints one JSON object per run (and a summary); nothing is written to the repository.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PROMPT = ("The Supplier shall indemnify the Customer against all claims, and invoices are payable within thirty "
          "days while the quarterly revenue rose")


def base_dir(base: str, work: Path) -> str:
    """``tiny``: a tiny random llama saved under ``work``; anything else is passed on (alias, folder)."""
    if base != "tiny":
        return base
    from adapterhub.base.tiny import make_tiny_llama

    folder = work / "tiny-llama"
    return str(folder if (folder / "config.json").exists() else make_tiny_llama(folder, seed=0))


def registry_of(base: str, work: Path, count: int, *, rank: int, targets: tuple[str, ...]) -> Path:
    """A registry of ``count`` random LoRA adapters ``z0..`` (made once per work folder)."""
    from adapterhub import Registry, load_base
    from adapterhub.runtime.testing import make_random_adapters

    tag = f"{Path(base).name}-{count}-r{rank}-{len(targets)}"
    root = work / f"registry-{tag}"
    if (root / "done").exists():
        return root
    loaded = load_base(base, device="cpu")
    registry = Registry(root)
    folders = make_random_adapters(loaded, work / f"dirs-{tag}", count=count, r=rank,
                                   target_modules=targets, prefix="z")
    for index, folder in enumerate(folders):
        registry.add(folder, f"z{index}", base=loaded)
    (root / "done").write_text("ok")
    return root


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(code: Path, base: str, registry: Path, port: int, args: argparse.Namespace,
                 extra: list[str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "adapterhub", "serve", "--base", base, "--base-name", "base",
               "--registry", str(registry), "--port", str(port), "--max-resident", str(args.max_resident),
               "--max-batch-rows", str(args.clients), "--device", "cpu", *extra]
    env = {**os.environ, "PYTHONPATH": str(code.resolve())}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server from {code} exited: {process.stderr.read()[-2000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return process
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError("server did not start")


async def drive(url: str, models: list[str], clients: int, new_tokens: int) -> dict[str, float]:
    """Send ``models`` (one LoRAX ``/generate`` each, greedy, end token ignored so every answer is ``new_tokens``
    long) from ``clients`` concurrent clients; generated tokens/s, failures and latencies."""
    import httpx

    queue = list(models)
    latencies: list[float] = []
    tokens = failures = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal tokens, failures
        while queue:
            model = queue.pop(0)
            started = time.perf_counter()
            answer = await client.post(url + "/generate", json={"inputs": PROMPT, "parameters": {
                "adapter_id": model, "max_new_tokens": new_tokens, "ignore_eos_token": True, "details": True}})
            if answer.status_code == 200:
                tokens += answer.json()["details"]["generated_tokens"]
            else:
                failures += 1
            latencies.append(time.perf_counter() - started)

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=clients)) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        wall = time.perf_counter() - started
    latencies.sort()
    return {"tokens_per_s": tokens / wall, "requests": len(models), "failures": failures, "wall_s": wall,
            "p50_s": latencies[len(latencies) // 2],
            "p99_s": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]}


def zipf_models(count: int, requests: int, alpha: float, seed: int) -> list[str]:
    weights = [1 / (rank + 1) ** alpha for rank in range(count)]
    rng = random.Random(seed)
    return [f"z{index}" for index in rng.choices(range(count), weights=weights, k=requests)]


def churn(args: argparse.Namespace) -> None:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    base = base_dir(args.base, work)
    registry = registry_of(base, work, args.adapters, rank=args.rank, targets=tuple(args.targets))
    codes = [(label, Path(path)) for label, path in (item.split("=", 1) for item in args.code)]
    runs: dict[str, list[dict]] = {}
    for repeat in range(args.repeat):
        for label, code in codes:  # side by side: each repeat runs every checkout once, in turn
            extra = [] if label == "before" else ["--host-budget-mb", str(args.host_budget_mb)]
            port = free_port()
            server = start_server(code, base, registry, port, args, extra)
            try:
                url = f"http://127.0.0.1:{port}"
                asyncio.run(drive(url, ["z0"] * args.requests, args.clients, args.new_tokens))  # warm-up, dropped
                ceiling = asyncio.run(drive(url, ["z0"] * args.requests, args.clients, args.new_tokens))
                skewed = asyncio.run(drive(url, zipf_models(args.adapters, args.requests, args.alpha, repeat),
                                           args.clients, args.new_tokens))
            finally:
                server.terminate()
                server.wait(60)
            run = {"code": label, "repeat": repeat, "one_adapter": ceiling, "zipf": skewed,
                   "ratio": skewed["tokens_per_s"] / ceiling["tokens_per_s"]}
            runs.setdefault(label, []).append(run)
            print(json.dumps(run), flush=True)
    summary = {label: {"zipf_tokens_per_s": [round(r["zipf"]["tokens_per_s"], 2) for r in found],
                       "one_adapter_tokens_per_s": [round(r["one_adapter"]["tokens_per_s"], 2) for r in found],
                       "ratio": [round(r["ratio"], 3) for r in found],
                       "ratio_median": round(statistics.median(r["ratio"] for r in found), 3)}
               for label, found in runs.items()}
    print(json.dumps({"summary": summary, "settings": {k: v for k, v in vars(args).items() if k != "handler"}}))


def latency(args: argparse.Namespace) -> None:
    """Median ms to make a rank-16 all-linear adapter device-resident, from the host tier and from disk."""
    from adapterhub import AdapterHub
    from adapterhub.runtime.testing import ALL_LINEAR

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    base = base_dir(args.base, work)
    registry = registry_of(base, work, 2, rank=16, targets=ALL_LINEAR)
    times: dict[str, list[float]] = {"host": [], "disk": []}
    for budget, origin in ((512, "host"), (0, "disk")):
        with AdapterHub(base, registry=str(registry), device="cpu", max_resident=1, host_budget_mb=budget) as hub:
            hub.load("z0"), hub.load("z1")  # both read once (into the host tier when there is one)
            for index in range(args.repeat):
                name = f"z{index % 2}"
                started = time.perf_counter()
                hub.residency.unpin(hub.residency.pin(name))  # evicts the other: one device load of `name`
                times[origin].append(1000 * (time.perf_counter() - started))
            counted = hub.residency.counters.histogram(origin)[0][-1]
            assert counted >= args.repeat, (origin, counted)  # every timed load came from that tier
            sizes = {info.name: info.bytes for info in hub.resident(tier="all")}
    print(json.dumps({origin: {"median_ms": round(statistics.median(found), 2),
                               "min_ms": round(min(found), 2), "max_ms": round(max(found), 2), "n": len(found)}
                      for origin, found in times.items()} | {"adapter_bytes": sizes, "base": args.base}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "adapterhub-zipf"))
    parser.add_argument("--base", default="tiny")
    verbs = parser.add_subparsers(dest="verb", required=True)
    run = verbs.add_parser("churn")
    run.add_argument("--adapters", type=int, default=200)
    run.add_argument("--rank", type=int, default=8)
    run.add_argument("--targets", nargs="+", default=["q_proj", "v_proj"])
    run.add_argument("--max-resident", type=int, default=8)
    run.add_argument("--host-budget-mb", type=float, default=1024)
    run.add_argument("--clients", type=int, default=16)
    run.add_argument("--requests", type=int, default=96)
    run.add_argument("--new-tokens", type=int, default=16)
    run.add_argument("--alpha", type=float, default=1.0)
    run.add_argument("--repeat", type=int, default=3)
    run.add_argument("--code", action="append", default=[], metavar="LABEL=CHECKOUT",
                     help="a checkout whose server to run (repeatable; 'before' gets no --host-budget-mb)")
    run.set_defaults(handler=churn)
    timed = verbs.add_parser("latency")
    timed.add_argument("--repeat", type=int, default=20)
    timed.set_defaults(handler=latency)
    args = parser.parse_args()
    if args.verb == "churn" and not args.code:
        args.code = ["after=."]
    args.handler(args)


if __name__ == "__main__":
    main()
