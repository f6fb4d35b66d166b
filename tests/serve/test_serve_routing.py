"""``model="auto"`` over HTTP: the router picks what serves each request (OpenAI and LoRAX routes, streaming or
not), the answer equals naming that adapter, the response and a header say what served it, ``/metrics`` counts the
decisions, and a key allowed only ``finance`` never gets another adapter through ``auto``."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.helpers.routing import mixed_texts
from tests.helpers.serving import start_server


@pytest.fixture(scope="module")
def routed_server(tiny_base, routing_registry, routing_router):
    hub, thread = start_server(tiny_base, routing_registry)
    hub.use_router("domains")
    yield hub, thread
    thread.stop()
    hub.close()


def test_auto_answers_like_the_adapter_it_chose(routed_server):
    import openai

    hub, srv = routed_server
    texts, _ = mixed_texts(seed=500)
    chosen = [d.label for d in hub.route(texts)]
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)

    def ask(model_and_text):
        model, text = model_and_text
        raw = client.completions.with_raw_response.create(model=model, prompt=text, max_tokens=6, temperature=0)
        answer = raw.parse()
        return answer.choices[0].text, answer.model, raw.headers.get("x-adapterhub-served-by")

    asked = [("auto", t) for t in texts] + list(zip(chosen, texts))  # auto rows beside named rows, one batch
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(ask, asked))
    auto, named = answers[:len(texts)], answers[len(texts):]
    assert [a[0] for a in auto] == [n[0] for n in named]
    assert [a[1] for a in auto] == chosen and [a[2] for a in auto] == chosen
    assert named[0][2] is None  # a named request carries no routing header
    stream = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": texts[0]}],
                                            max_tokens=6, temperature=0, stream=True)
    chunks = list(stream)
    whole = client.chat.completions.create(model=chosen[0], messages=[{"role": "user", "content": texts[0]}],
                                           max_tokens=6, temperature=0)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    assert chunks[-1].model == chosen[0]
    with httpx.Client(base_url=srv.url, timeout=60) as http:
        lorax = http.post("/generate", json={"inputs": texts[3], "parameters": {
            "adapter_id": "auto", "max_new_tokens": 6, "details": True}}).json()
        named_lorax = http.post("/generate", json={"inputs": texts[3], "parameters": {
            "adapter_id": chosen[3], "max_new_tokens": 6}}).json()
        metrics = http.get("/metrics").text
    assert lorax["generated_text"] == named_lorax["generated_text"] and lorax["details"]["adapter_id"] == chosen[3]
    counted = [line for line in metrics.splitlines() if line.startswith("adapterhub_route_decisions")]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in counted) == len(texts) + 2
    assert any('adapter="legal"' in line for line in counted)


def test_auto_requests_are_routed_in_the_scheduler_step_many_to_a_pass(routed_server, monkeypatch):
    import threading

    import adapterhub.serve.engine as engine_module
    from adapterhub.serve.routing import decide_each

    hub, srv = routed_server
    passes = []

    def spy(hub_, jobs):
        passes.append((threading.current_thread().name, [len(job.texts) for job in jobs]))
        decide_each(hub_, jobs)

    monkeypatch.setattr(engine_module, "decide_each", spy)
    texts, _ = mixed_texts(seed=550)
    chosen = [d.label for d in hub.route(texts)]
    with httpx.Client(base_url=srv.url, timeout=60) as http, ThreadPoolExecutor(len(texts)) as pool:
        served = list(pool.map(lambda text: http.post("/v1/completions", json={
            "model": "auto", "prompt": text, "max_tokens": 2}).headers["x-adapterhub-served-by"], texts))
        sports = http.post("/v1/completions", json={"model": "auto:sports", "prompt": texts[0]})
    assert served == chosen
    assert {thread for thread, _ in passes} == {"adapterhub-scheduler"}  # no forward of its own beside the batch
    assert sum(sum(jobs) for _, jobs in passes) == len(texts) + 1 and len(passes) <= len(texts) + 1
    assert sports.status_code == 400  # one request's bad candidates fail that request only


def test_auto_classifies_each_text_with_its_adapter(routed_server):
    hub, srv = routed_server
    texts, _ = mixed_texts(seed=600)
    texts = [text for text, d in zip(texts, hub.route(texts)) if d.decision == "adapter"]  # base rows: a 400 (below)
    chosen = [d.choice for d in hub.route(texts)]
    assert len(set(chosen)) >= 2
    with httpx.Client(base_url=srv.url, timeout=60) as http:
        answer = http.post("/v1/classify", json={"model": "auto", "input": texts})
    assert answer.status_code == 200, answer.text
    assert [row["label"] for row in answer.json()["data"]] == hub.predict(texts, domains=chosen)
    with httpx.Client(base_url=srv.url, timeout=60) as http:
        outside = http.post("/v1/classify", json={"model": "auto", "input": ["the the the the"]})
    if hub.route("the the the the")[0].decision == "base":
        assert outside.status_code == 400 and outside.json()["error"]["code"] == "task_mismatch"


def test_a_key_allowed_only_finance_never_gets_another_adapter(tiny_base, routing_registry, routing_router, tmp_path):
    from adapterhub.serve.auth import KeyStore

    keys = KeyStore(tmp_path / "keys.sqlite")
    finance_only, anything = keys.create("fin", allow=["finance"]), keys.create("all")
    hub, srv = start_server(tiny_base, routing_registry, auth=True, keys_path=str(tmp_path / "keys.sqlite"))
    hub.use_router("domains", fallback="mix")
    try:
        texts, truth = mixed_texts(seed=700)
        with httpx.Client(base_url=srv.url, timeout=60) as http:
            def served(key, model, text):
                answer = http.post("/v1/completions", json={"model": model, "prompt": text, "max_tokens": 2},
                                   headers={"Authorization": f"Bearer {key}"})
                assert answer.status_code == 200, answer.text
                return answer.headers["x-adapterhub-served-by"]

            restricted = [served(finance_only, "auto", text) for text in texts]
            assert set(restricted) <= {"finance@1", "base"} and "finance@1" in restricted
            assert "legal@1" in [served(anything, "auto", t) for t, d in zip(texts, truth) if d == "legal"]
            refused = http.post("/v1/completions", json={"model": "auto:legal,medical", "prompt": texts[0]},
                                headers={"Authorization": f"Bearer {finance_only}"})
            assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed"
    finally:
        srv.stop()
        hub.close()


def test_auto_without_a_router_or_text_is_one_clear_error(routed_server, tiny_base, routing_registry):
    _, srv = routed_server
    with httpx.Client(base_url=srv.url, timeout=60) as http:
        empty = http.post("/v1/completions", json={"model": "auto", "prompt": "   "})
        unknown = http.post("/v1/completions", json={"model": "auto:sports", "prompt": "shares"})
    assert empty.status_code == 400 and empty.json()["error"]["code"] == "empty_prompt"
    assert unknown.status_code == 400 and "cannot choose sports" in unknown.json()["error"]["message"]
    hub, bare = start_server(tiny_base, routing_registry)
    try:
        answer = httpx.post(bare.url + "/v1/completions", json={"model": "auto", "prompt": "shares"}, timeout=60)
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "no_router"
    finally:
        bare.stop()
        hub.close()


def test_a_ray_replica_routes_auto_with_its_own_router(routed_server, tiny_llama_dir, routing_registry):
    """``serve --ray --router``: the ingress multiplexes ``auto`` to any replica (no adapter id), and the replica
    routes it with the router of its registry (the replica's app is run here in-process, without Ray)."""
    import asyncio
    import json

    from adapterhub.serve import ServeOptions
    from adapterhub.serve.replicas import ReplicaServer, ReplicaSettings, adapter_of

    hub, _ = routed_server
    texts, _ = mixed_texts(seed=800)
    chosen = [d.label for d in hub.route(texts)]
    assert adapter_of(json.dumps({"model": "auto", "prompt": "x"}).encode()) == ""
    settings = ReplicaSettings(base=str(tiny_llama_dir), device="cpu", registry=str(routing_registry.root),
                               router="domains", options=ServeOptions(max_rows=4, max_new_tokens=8))
    replica = ReplicaServer(settings, "r0")

    async def served(text):
        request = {"method": "POST", "path": "/v1/completions", "headers": [("content-type", "application/json")]}
        body = json.dumps({"model": "auto", "prompt": text, "max_tokens": 2}).encode()
        async for head in replica.forward(request, body):
            return dict((k.lower(), v) for k, v in head["headers"]).get("x-adapterhub-served-by")

    try:
        assert [asyncio.run(served(text)) for text in texts[::3]] == chosen[::3]
    finally:
        replica.close()


def test_a_burst_of_auto_requests_is_routed_a_bounded_number_of_texts_per_step():
    """Each step routes at most ``route_texts`` texts (one request at least), so the running rows wait at most
    one bounded routing pass per step; every request is answered, in arrival order."""
    import threading

    from adapterhub.serve.scheduler import Scheduler

    passes, gate = [], threading.Event()

    def route_batch(jobs):
        gate.wait(10)  # the first pass holds the step until all five requests wait
        passes.append([len(job.texts) for job in jobs])
        for job in jobs:
            job.future.set_result(job.texts)

    scheduler = Scheduler(None, route_batch=route_batch, route_texts=3)
    scheduler.start()
    try:
        futures = [scheduler.route([f"text {i}"] * size) for i, size in enumerate((1, 2, 2, 4, 1))]
        gate.set()
        assert [len(future.result(10)) for future in futures] == [1, 2, 2, 4, 1]
    finally:
        scheduler.stop(10)
    assert [size for sizes in passes for size in sizes] == [1, 2, 2, 4, 1]
    assert all(sum(sizes) <= 3 or len(sizes) == 1 for sizes in passes) and len(passes) >= 3


def test_a_route_request_that_went_away_is_dropped_and_fails_no_other():
    from adapterhub.serve.scheduler import Scheduler

    seen = []

    def route_batch(jobs):
        seen.append([job.texts[0] for job in jobs])
        for job in jobs:
            job.future.set_result(job.texts)

    scheduler = Scheduler(None, route_batch=route_batch)
    gone, kept = scheduler.route(["gone"]), None
    assert gone.cancel()  # the client disconnected before the step
    kept = scheduler.route(["kept"])
    scheduler.start()
    try:
        assert kept.result(10) == ["kept"]
    finally:
        scheduler.stop(10)
    assert seen == [["kept"]] and gone.cancelled()
