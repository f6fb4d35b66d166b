"""One request must never hurt another (issue 32, items 1-6): bad sampling fails its own row only, large
prompts never freeze the event loop, spellings of one version share one resident copy, chunked bodies meet the
size limit, browsers cannot drive a loopback server, and /metrics stays bounded."""

from __future__ import annotations

import gc
import json
import threading
import time

import httpx
import pytest

from adapterhub.runtime.sampling import Sampler
from adapterhub.serve.scheduler import Job
from tests.helpers.serving import start_server

VICTIM = {"model": "legal", "prompt": "Patient reports chest pain", "max_tokens": 64, "temperature": 0,
          "stream": True, "stop": ["never-appears"]}
JSON = {"content-type": "application/json"}


def post(url, path, body, **headers):
    return httpx.post(url + path, content=json.dumps(body).encode(), timeout=60, headers={**JSON, **headers})


def engine_of(srv):
    return srv.server.config.app.state.engine


def stream_victim(url, results, index):
    """One greedy streaming completion; records its finish reason (or the error it ended with)."""
    finish = None
    with httpx.stream("POST", url + "/v1/completions", content=json.dumps(VICTIM), headers=JSON, timeout=60) as r:
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                finish = "error:" + str(event["error"].get("code"))
            elif event["choices"][0]["finish_reason"]:
                finish = event["choices"][0]["finish_reason"]
    results[index] = finish


POISON = [  # (path, body): each made logits or the sampler fail inside the step before
    ("/v1/completions", {"model": "legal", "prompt": "x", "max_tokens": 4, "temperature": 1e-300}),
    ("/v1/completions", {"model": "legal", "prompt": "x", "max_tokens": 4, "temperature": 1, "top_p": 1e-300}),
    ("/v1/chat/completions", {"model": "legal", "messages": [{"role": "user", "content": "x"}], "max_tokens": 4,
                              "temperature": 1, "seed": 1e23}),
    ("/generate", {"inputs": "x", "parameters": {"adapter_id": "legal", "do_sample": True, "seed": 2**64}}),
    ("/generate", {"inputs": "x", "parameters": {"adapter_id": "legal", "temperature": 1e-300}}),
    ("/v1/completions", {"model": "legal:1e38+legal@1:-1e38", "prompt": "x", "max_tokens": 4}),
]


@pytest.mark.parametrize("path,body", POISON)
def test_out_of_range_sampling_and_mix_weights_are_refused_at_the_edge(server, path, body):
    _, srv = server
    response = post(srv.url, path, body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] in ("invalid_value", "invalid_request"), response.text


class GoesBadOnItsSecondToken(Sampler):
    """A sampler that slipped past the edge checks: its second pick overflows (temperature set after the checks),
    so it fails inside a decode step, beside the rows it shares the batch with."""

    picks = 0

    def pick(self, logits):
        self.picks += 1
        if self.picks == 2:
            self.temperature = 1e-300
        return super().pick(logits)


def test_a_row_whose_sampling_goes_bad_fails_alone(server, monkeypatch):
    """Four greedy streams and one row whose sampling goes bad share a batch: that row ends with an error, the
    four streams finish."""
    _, srv = server
    engine = engine_of(srv)
    held, release = [], threading.Event()
    real_prefill = engine.stepper.prefill

    def held_prefill(prompts, *args, **kwargs):  # the scheduler waits here until every row is queued
        held.append(len(prompts))
        release.wait(60)
        return real_prefill(prompts, *args, **kwargs)

    monkeypatch.setattr(engine.stepper, "prefill", held_prefill)
    results = [None] * 4
    victims = [threading.Thread(target=stream_victim, args=(srv.url, results, i)) for i in range(4)]
    for thread in victims:
        thread.start()
    while sum(held) + engine.scheduler.waiting < 4:
        assert all(thread.is_alive() for thread in victims), results
        time.sleep(0.001)
    events, done = [], threading.Event()
    entry = engine.stepper.acquire("legal")
    prompt = engine.stepper.encode("x", entry, chat=False)

    def emit(event):
        events.append({**event, "running": engine.scheduler.running})
        if event["type"] in ("done", "error"):
            done.set()

    engine.scheduler.submit(Job(prompt=prompt, entry=entry, max_new_tokens=8,
                                sampler=GoesBadOnItsSecondToken(temperature=1.0, seed=1), emit=emit))
    release.set()
    assert done.wait(60)
    for thread in victims:
        thread.join(60)
    assert events[-1]["type"] == "error" and events[-1]["running"] == 5, events[-1]  # it failed inside the batch
    assert results == ["length"] * 4, results


def test_a_huge_prompt_is_refused_before_tokenising_and_tokenising_runs_off_the_loop(server, monkeypatch):
    _, srv = server
    stepper = engine_of(srv).stepper
    threads = []
    real = stepper.encode

    def spy(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(stepper, "encode", spy)
    huge = post(srv.url, "/v1/completions", {"model": "legal", "prompt": "chest pain " * 300_000, "max_tokens": 4})
    assert huge.status_code == 400 and huge.json()["error"]["code"] == "context_length_exceeded", huge.text
    assert "characters" in huge.json()["error"]["message"] and threads == []  # refused without tokenising
    ok = post(srv.url, "/v1/completions", {"model": "legal", "prompt": "chest pain", "max_tokens": 2})
    assert ok.status_code == 200, ok.text
    assert threads and "adapterhub-uvicorn" not in threads  # the server's event loop runs in that thread


def test_a_refused_huge_prompt_is_freed_at_once_not_at_the_next_full_gc(server):
    """Its frames and arguments are not left in reference cycles that only a full collection frees."""
    _, srv = server
    huge = {"model": "legal", "prompt": "chest pain " * 300_000, "max_tokens": 4}
    post(srv.url, "/v1/completions", huge)
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        assert post(srv.url, "/v1/completions", huge).status_code == 400
        gc.collect()
        holders = [type(o).__name__ for o in gc.garbage for r in gc.get_referents(o)
                   if isinstance(r, str) and len(r) > 2**20]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert holders == [], holders


def test_spellings_of_one_version_share_one_resident_copy(tiny_base, serve_registry):
    hub, srv = start_server(tiny_base, serve_registry)
    try:
        for model in ("legal@1", "legal@01", "legal@001", "legal@0001", "legal@latest", "legal"):
            response = post(srv.url, "/v1/completions", {"model": model, "prompt": "x", "max_tokens": 2})
            assert response.status_code == 200, (model, response.text)
        names = sorted(info.name for info in hub.resident())
        assert len(names) == 2, names  # legal@1 once, and legal (its latest) once
    finally:
        srv.stop()
        hub.close()


def test_a_served_hub_has_a_default_residency_bound():
    from adapterhub.cli import build_parser

    args = build_parser().parse_args(["serve"])
    assert isinstance(args.max_resident, int) and 1 <= args.max_resident <= 256, args.max_resident


def test_a_chunked_body_over_the_limit_is_stopped_with_413(server):
    _, srv = server

    def chunks():
        yield b'{"model": "legal", "max_tokens": 2, "prompt": "'
        for _ in range(10):
            yield b"a" * 2**20  # 10 MiB in all, over the 8 MiB limit, with no Content-Length
        yield b'"}'

    response = httpx.post(srv.url + "/v1/completions", content=chunks(), headers=JSON, timeout=60)
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "body_too_large"


def test_browsers_cannot_drive_a_loopback_server(tiny_base, serve_registry):
    """A text/plain POST (sent without a preflight) and a foreign Host (DNS rebinding) are refused;
    ``allowed_hosts`` adds names; load errors do not tell which paths exist."""
    hub, srv = start_server(tiny_base, serve_registry, allowed_hosts=["api.example"])
    body = json.dumps({"model": "legal", "prompt": "x", "max_tokens": 2})
    try:
        plain = httpx.post(srv.url + "/v1/completions", content=body, headers={"content-type": "text/plain"})
        assert plain.status_code == 415 and plain.json()["error"]["code"] == "unsupported_media_type", plain.text
        rebound = httpx.get(srv.url + "/v1/models", headers={"host": "evil.example"})
        assert rebound.status_code == 421 and rebound.json()["error"]["code"] == "host_not_allowed", rebound.text
        assert httpx.get(srv.url + "/v1/models", headers={"host": "api.example"}).status_code == 200
        assert httpx.get(srv.url + "/v1/models", headers={"host": f"localhost:{srv.port}"}).status_code == 200
        answers = [post(srv.url, "/v1/load_lora_adapter", {"lora_name": "probe", "lora_path": path})
                   for path in ("/etc", "/no/such/folder/anywhere")]
        assert [a.status_code for a in answers] == [400, 400], [a.text for a in answers]
        messages = [a.json()["error"]["message"] for a in answers]
        assert messages[0] == messages[1] and "/etc" not in messages[0], messages
    finally:
        srv.stop()
        hub.close()


def test_metrics_label_mixes_as_one_value_and_keep_only_the_top_adapters(tiny_base, serve_registry):
    hub, srv = start_server(tiny_base, serve_registry, metrics_top_k=1)
    try:
        def send(model):
            response = post(srv.url, "/v1/completions", {"model": model, "prompt": "x", "max_tokens": 1})
            assert response.status_code == 200, response.text

        for _ in range(3):
            send("legal")
        send("medical")
        send("legal:0.5+legal@2:0.5")
        first = httpx.get(srv.url + "/metrics").text
        for i in range(40):
            send(f"legal:0.{i + 10}+legal@2:0.5")
        send("legal@2")
        text = httpx.get(srv.url + "/metrics").text
        assert 'adapter="legal"' in text and 'adapter="mix"' in text and 'adapter="other"' in text
        assert 'adapter="medical"' not in text and 'adapter="legal@2"' not in text and "legal:0." not in text
        assert len(text) <= 1.1 * len(first), (len(first), len(text))
    finally:
        srv.stop()
        hub.close()
