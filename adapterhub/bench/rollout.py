"""Live rollout under load: how soon a running server serves a channel's new holder, and whether anything fails.

One server (the embedded base by default) serves ``finance@prod`` to N clients that stream greedy completions
without pause. Each repeat moves the channel four times — a promotion and a rollback over the admin HTTP route,
then a promotion and a rollback made by another :class:`~adapterhub.Registry` object (what the CLI in another
process does: the server learns of it only by polling) — and records, per move, the seconds from the move's
commit to the start of the first request answered by the new holder. Every answer must equal one version's own
answer (no failure, no mix). Then a 10% canary serves ``--requests`` requests and the share the candidate
answered is counted from the answers themselves.

    python -m adapterhub.bench.rollout --out bench-out/rollout      # writes rollout.json, prints a summary
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

PROMPT = "The quarterly revenue of the company rose while margins narrowed"
MAX_TOKENS = 12


def _stream(http: Any, url: str, model: str) -> str:
    body = {"model": model, "prompt": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0, "stream": True}
    parts = []
    with http.stream("POST", url + "/v1/completions", json=body) as answer:
        if answer.status_code != 200:
            raise RuntimeError(f"HTTP {answer.status_code}: {answer.read()[:200]!r}")
        for line in answer.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                event = json.loads(line[6:])
                if "error" in event:
                    raise RuntimeError(str(event["error"]))
                parts.append(event["choices"][0]["text"])
    return "".join(parts)


class Load:
    """``clients`` threads streaming from ``model`` until stopped; each answer as (started, text or error)."""

    def __init__(self, url: str, model: str, clients: int) -> None:
        self.url, self.model, self.clients = url, model, clients
        self.answers: list[tuple[float, str]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(clients)
        self._running: list[Any] = []

    def __enter__(self) -> Load:
        self._running = [self._pool.submit(self._client) for _ in range(self.clients)]
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for future in self._running:
            future.result()
        self._pool.shutdown()

    def _client(self) -> None:
        import httpx

        with httpx.Client(timeout=300) as http:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    self.answers.append((started, _stream(http, self.url, self.model)))
                except Exception as error:  # noqa: BLE001 - counted: the target is zero
                    self.failures.append(repr(error)[:300])

    def switched(self, moved_at: float, new: str, limit: float = 120.0) -> float:
        """Seconds from ``moved_at`` to the start of the first answer of ``new`` begun after it."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            after = sorted(started for started, text in list(self.answers) if started >= moved_at and text == new)
            if after:
                return after[0] - moved_at
            time.sleep(0.05)
        raise RuntimeError(f"the new holder's answer was not seen within {limit} s")


def run(base: str | None, *, clients: int, repeats: int, requests: int, poll_s: float) -> dict[str, Any]:
    import httpx

    from .. import AdapterHub, Registry
    from ..runtime.testing import make_random_adapters
    from ..serve import ServeOptions, ServerThread, build_app

    work = Path(tempfile.mkdtemp(prefix="rollout-bench-"))
    hub = AdapterHub(base) if base else AdapterHub()
    registry = Registry(work / "registry")
    for folder in make_random_adapters(hub.base, work / "adapters", count=2, r=8, std=0.05, seed=3):
        registry.add(folder, "finance", base=hub.base)
    registry.promote("finance@1", channel="prod", who="bench")
    hub.close()
    hub = AdapterHub(base, registry=registry) if base else AdapterHub(registry=registry)
    app = build_app(hub, ServeOptions(max_rows=16, max_queue=4 * clients, channel_poll_s=poll_s))
    moves: list[dict[str, Any]] = []
    with ServerThread(app) as server, httpx.Client(timeout=300) as http:
        alone = {version: _stream(http, server.url, f"finance@{version}") for version in (1, 2)}
        if alone[1] == alone[2]:
            raise RuntimeError("the two random adapters answer alike; raise std")
        outside = Registry(registry.root)  # like the CLI in another process: the server only polls the registry
        with Load(server.url, "finance@prod", clients) as load:
            load.switched(time.monotonic() - 1, alone[1])
            for repeat in range(repeats):
                for how in ("http", "registry"):
                    for op, to in (("promote", 2), ("rollback", 1)):
                        if how == "http":
                            path = f"/v1/adapters/finance/{op}"
                            sent = {"channel": "prod", **({"version": to} if op == "promote" else {})}
                            answer = http.post(server.url + path, json=sent)
                            answer.raise_for_status()
                        elif op == "promote":
                            outside.promote(f"finance@{to}", channel="prod", who="bench")
                        else:
                            outside.rollback("finance", channel="prod", who="bench")
                        moved_at = time.monotonic()
                        delay = load.switched(moved_at, alone[to])
                        moves.append({"repeat": repeat, "via": how, "op": op, "to": to, "seconds": round(delay, 3)})
                        print(f"repeat {repeat} {how:8} {op:8} -> finance@{to}: new requests served by it after "
                              f"{delay:.2f} s", flush=True)
                        time.sleep(0.5)
        answers = [text for _, text in load.answers]
        streaming = {"answers": len(answers), "failures": len(load.failures), "failure_samples": load.failures[:5],
                     "mixed_or_foreign": sum(text not in alone.values() for text in answers)}
        http.post(server.url + "/v1/adapters/finance/promote",
                  json={"channel": "prod", "version": 2, "canary": "10%"}).raise_for_status()
        served = _canary(server.url, requests, clients)
        http.post(server.url + "/v1/adapters/finance/rollback", json={"channel": "prod"}).raise_for_status()
    hub.close()
    canary_answers = served.count(alone[2])
    summary = {}
    for how in ("http", "registry"):
        seconds = [move["seconds"] for move in moves if move["via"] == how]
        summary[how] = {"median_s": round(statistics.median(seconds), 3), "max_s": max(seconds),
                        "min_s": min(seconds), "moves": len(seconds)}
    return {"base": hub.base.spec.name, "clients": clients, "poll_s": poll_s, "moves": moves,
            "switch_seconds": summary, "streaming": streaming,
            "canary": {"requests": len(served), "candidate": canary_answers,
                       "share_percent": round(100 * canary_answers / max(len(served), 1), 2),
                       "neither": sum(text not in alone.values() for text in served)}}


def _canary(url: str, requests: int, clients: int) -> list[str]:
    import httpx

    def one(_: int) -> str:
        with httpx.Client(timeout=300) as http:
            return _stream(http, url, "finance@prod")

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(one, range(requests)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default=None, help="base alias, folder or HF id (default: the embedded base)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--requests", type=int, default=1000, help="requests during the 10%% canary")
    parser.add_argument("--poll", type=float, default=1.0, help="the server's channel poll interval (its default)")
    parser.add_argument("--out", type=Path, default=Path("bench-out/rollout"))
    args = parser.parse_args(argv)
    result = run(args.base, clients=args.clients, repeats=args.repeats, requests=args.requests, poll_s=args.poll)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rollout.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({key: result[key] for key in ("switch_seconds", "streaming", "canary")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
