"""Live rollout under load: how soon a running server serves a channel's new holder, and whether anything fails.

One server (the embedded base by default) serves ``finance@prod`` to N clients that stream greedy completions
without pause. Each repeat moves the channel four times — a promotion and a rollback over the admin HTTP route,
then a promotion and a rollback made by another :class:`~adapterhub.Registry` object (what the CLI in another
process does: the server learns of it only by polling) — and records, per move, the seconds from the move's
commit until the server routes ``finance@prod`` to the new holder (its ``adapterhub_channel_version`` gauge,
the state routing reads), then checks that every request begun after that answered with the new holder. Every
answer must equal one version's own answer (no failure, no mix). Then a 10% canary serves ``--requests`` requests and the share the candidate
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
CANARY_TOKENS = 4  # enough to tell the two versions apart (checked), short enough for 1,000 requests on a CPU


def _stream(http: Any, url: str, model: str, max_tokens: int = MAX_TOKENS) -> str:
    body = {"model": model, "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0, "stream": True}
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

    def answered_after(self, moment: float) -> list[str]:
        """The answers of requests started at or after ``moment`` (monotonic)."""
        return [text for started, text in list(self.answers) if started >= moment]


def _routed_to(http: Any, url: str, version: int, limit: float = 120.0) -> float:
    """Wait until the server routes ``finance@prod`` to ``version`` (its holder gauge); the monotonic time then."""
    line = f'adapterhub_channel_version{{adapter="finance",channel="prod",role="holder"}} {float(version)}'
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if line in http.get(url + "/metrics").text:
            return time.monotonic()
        time.sleep(0.02)
    raise RuntimeError(f"the server did not route finance@prod to finance@{version} within {limit} s")


def _wait(condition: Any, limit: float = 600.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no progress within {limit} s")
        time.sleep(0.05)


def run(base: str | None, *, clients: int, repeats: int, requests: int, poll_s: float) -> dict[str, Any]:
    """Measure on a fresh registry of two random adapters in a temporary folder (removed afterwards)."""
    with tempfile.TemporaryDirectory(prefix="rollout-bench-") as folder:
        return _run(Path(folder), base, clients=clients, repeats=repeats, requests=requests, poll_s=poll_s)


def _run(work: Path, base: str | None, *, clients: int, repeats: int, requests: int, poll_s: float) -> dict[str, Any]:
    import httpx

    from .. import AdapterHub, Registry
    from ..runtime.testing import make_random_adapters
    from ..serve import ServeOptions, ServerThread, build_app

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
            _wait(lambda: len(load.answers) >= clients)
            for repeat in range(repeats):
                for how in ("http", "registry"):
                    for op, to in (("promote", 2), ("rollback", 1)):
                        before = time.monotonic()
                        if how == "http":
                            path = f"/v1/adapters/finance/{op}"
                            sent = {"channel": "prod", **({"version": to} if op == "promote" else {})}
                            http.post(server.url + path, json=sent).raise_for_status()
                        elif op == "promote":
                            outside.promote(f"finance@{to}", channel="prod", who="bench")
                        else:
                            outside.rollback("finance", channel="prod", who="bench")
                        moved_at = time.monotonic()  # committed (the HTTP route answers after the commit)
                        routed_at = _routed_to(http, server.url, to)
                        # every request begun after the switch must answer with the new holder: let `clients` finish
                        _wait(lambda: len(load.answered_after(routed_at)) >= clients)
                        late = sum(text != alone[to] for text in load.answered_after(routed_at))
                        moves.append({"repeat": repeat, "via": how, "op": op, "to": to,
                                      "move_s": round(moved_at - before, 3),
                                      "switch_s": round(max(routed_at - moved_at, 0.0), 3), "old_after_switch": late})
                        print(f"repeat {repeat} {how:8} {op:8} -> finance@{to}: routed to it {routed_at - moved_at:.2f} s "
                              f"after the commit; {late} requests begun later answered otherwise", flush=True)
        answers = [text for _, text in load.answers]
        streaming = {"answers": len(answers), "failures": len(load.failures), "failure_samples": load.failures[:5],
                     "mixed_or_foreign": sum(text not in alone.values() for text in answers)}
        http.post(server.url + "/v1/adapters/finance/promote",
                  json={"channel": "prod", "version": 2, "canary": "10%"}).raise_for_status()
        short = {version: _stream(http, server.url, f"finance@{version}", CANARY_TOKENS) for version in (1, 2)}
        tokens = CANARY_TOKENS if short[1] != short[2] else MAX_TOKENS
        short = short if tokens == CANARY_TOKENS else alone
        served = _canary(server.url, requests, clients, tokens)
        http.post(server.url + "/v1/adapters/finance/rollback", json={"channel": "prod"}).raise_for_status()
    hub.close()
    canary_answers = served.count(short[2])
    summary = {}
    for how in ("http", "registry"):
        seconds = [move["switch_s"] for move in moves if move["via"] == how]
        summary[how] = {"median_s": round(statistics.median(seconds), 3), "max_s": max(seconds),
                        "min_s": min(seconds), "moves": len(seconds),
                        "old_after_switch": sum(move["old_after_switch"] for move in moves if move["via"] == how)}
    return {"base": hub.base.spec.name, "clients": clients, "poll_s": poll_s, "moves": moves,
            "switch_seconds": summary, "streaming": streaming,
            "canary": {"requests": len(served), "candidate": canary_answers,
                       "share_percent": round(100 * canary_answers / max(len(served), 1), 2),
                       "neither": sum(text not in short.values() for text in served), "max_tokens": tokens}}


def _canary(url: str, requests: int, clients: int, max_tokens: int) -> list[str]:
    import httpx

    def one(_: int) -> str:
        with httpx.Client(timeout=300) as http:
            return _stream(http, url, "finance@prod", max_tokens)

    from tqdm import tqdm

    with ThreadPoolExecutor(clients) as pool:
        return list(tqdm(pool.map(one, range(requests)), total=requests, desc="canary requests"))


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
