"""The server answers real clients (openai sync/async/stream, lorax-client, raw HTTP) over a real uvicorn,
and greedy answers through it equal ``hub.generate`` token for token, alone and under concurrent mixed load."""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest


PROMPTS = ["Patient reports chest pain", "The quarterly revenue of the company rose while margins narrowed",
           "This Agreement shall be governed by the laws of the State of New York", "What is the capital of France?",
           "Invoices are payable within thirty days", "positive"]
MODELS = ["legal", "medical", "tiny", "legal@1", "finance", "legal"]  # LoRA, prefix, bare base, pinned version


def openai_client(url, **kwargs):
    import openai

    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, **kwargs)


def reference(hub, prompt, model, *, chat, max_new_tokens):
    domain = None if model == "tiny" else model
    if domain and "@" in domain:
        hub.load(domain, name=domain)
    return hub.generate(prompt, domain=domain, max_new_tokens=max_new_tokens, chat=chat)


def test_openai_sync_chat_and_completion_equal_hub_generate(server):
    hub, srv = server
    client = openai_client(srv.url)
    for prompt, model in zip(PROMPTS[:4], MODELS[:4]):
        chat = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                              max_tokens=12, temperature=0)
        assert chat.choices[0].message.content.strip() == reference(hub, prompt, model, chat=True, max_new_tokens=12)
        assert chat.usage.completion_tokens <= 12 and chat.usage.prompt_tokens > 0
        text = client.completions.create(model=model, prompt=prompt, max_tokens=12, temperature=0)
        assert text.choices[0].text.strip() == reference(hub, prompt, model, chat=False, max_new_tokens=12)
        assert text.choices[0].finish_reason in ("stop", "length")


def test_greedy_answers_under_concurrent_mixed_load_equal_hub_generate(server):
    hub, srv = server
    jobs = [(PROMPTS[i % len(PROMPTS)] + " " * (i // len(PROMPTS)), MODELS[(i * 5) % len(MODELS)], 8 + (i % 3) * 8)
            for i in range(18)]
    expected = [reference(hub, p, m, chat=True, max_new_tokens=n) for p, m, n in jobs]
    steps_before = _metric(srv.url, "adapterhub_batch_rows_sum"), _metric(srv.url, "adapterhub_batch_rows_count")

    def ask(job):
        prompt, model, tokens = job
        with httpx.Client(timeout=60) as http:
            answer = http.post(srv.url + "/v1/chat/completions", json={
                "model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": tokens,
                "temperature": 0})
        assert answer.status_code == 200, answer.text
        return answer.json()["choices"][0]["message"]["content"].strip()

    with ThreadPoolExecutor(len(jobs)) as pool:
        got = list(pool.map(ask, jobs))
    assert got == expected
    rows = _metric(srv.url, "adapterhub_batch_rows_sum") - steps_before[0]
    steps = _metric(srv.url, "adapterhub_batch_rows_count") - steps_before[1]
    assert rows / steps > 1.5  # rows really shared decode steps


def test_openai_streaming_sync_and_async(server):
    hub, srv = server
    client = openai_client(srv.url)
    expected = reference(hub, PROMPTS[0], "medical", chat=True, max_new_tokens=16)
    chunks = list(client.chat.completions.create(model="medical", messages=[{"role": "user", "content": PROMPTS[0]}],
                                                 max_tokens=16, temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() == expected
    assert chunks[-1].usage.completion_tokens <= 16
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")

    async def both():
        import openai

        async with openai.AsyncOpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0) as aclient:
            whole = aclient.completions.create(model="legal", prompt=PROMPTS[1], max_tokens=10, temperature=0)
            streamed = await aclient.completions.create(model="legal", prompt=PROMPTS[1], max_tokens=10,
                                                        temperature=0, stream=True)
            parts = [chunk.choices[0].text async for chunk in streamed]
            return (await whole).choices[0].text, "".join(parts)

    whole, streamed = asyncio.run(both())
    assert whole == streamed and whole.strip() == reference(hub, PROMPTS[1], "legal", chat=False, max_new_tokens=10)


def test_stop_seed_temperature_top_p(server):
    hub, srv = server
    client = openai_client(srv.url)
    full = client.completions.create(model="legal", prompt=PROMPTS[0], max_tokens=16, temperature=0).choices[0].text
    stop = full.strip()[3:6]
    cut = client.completions.create(model="legal", prompt=PROMPTS[0], max_tokens=16, temperature=0, stop=[stop])
    assert cut.choices[0].finish_reason == "stop" and cut.choices[0].text == full[:full.index(stop)]
    streamed = client.completions.create(model="legal", prompt=PROMPTS[0], max_tokens=16, temperature=0, stop=stop,
                                         stream=True)
    assert "".join(c.choices[0].text for c in streamed) == full[:full.index(stop)]
    sampled = [client.completions.create(model="medical", prompt="x", max_tokens=12, temperature=1.2, top_p=0.9,
                                         seed=seed).choices[0].text for seed in (7, 7, 8)]
    assert sampled[0] == sampled[1] != sampled[2]


def test_lorax_client_generate_and_stream(server):
    lorax = pytest.importorskip("lorax", reason="lorax-client is not installed (pip install --no-deps lorax-client)")
    hub, srv = server
    client = lorax.Client(srv.url)
    expected = reference(hub, PROMPTS[2], "legal", chat=False, max_new_tokens=10)
    answer = client.generate(PROMPTS[2], adapter_id="legal", max_new_tokens=10, details=True)
    assert answer.generated_text.strip() == expected
    assert answer.details.generated_tokens == len(answer.details.tokens) <= 10
    parts = list(client.generate_stream(PROMPTS[2], adapter_id="legal", max_new_tokens=10))
    assert "".join(p.token.text for p in parts).strip() == expected
    assert parts[-1].generated_text.strip() == expected and parts[-1].details.finish_reason is not None
    assert httpx.post(srv.url + "/generate", json={"inputs": PROMPTS[2], "parameters": {
        "adapter_id": "legal", "max_new_tokens": 10}}).json()["generated_text"].strip() == expected


def test_classify_equals_hub_predict_in_label_order(server):
    hub, srv = server
    texts = ["Shares jumped 8% after earnings.", "Revenue fell sharply."]
    body = httpx.post(srv.url + "/v1/classify", json={"model": "finance", "input": texts}).json()
    scores = hub.label_scores(texts, domain="finance")
    assert [row["label"] for row in body["data"]] == hub.predict(texts, domain="finance")
    for row, expected in zip(body["data"], scores):
        assert row["labels"] == list(expected) == ["positive", "negative", "neutral"]
        assert row["probs"] == pytest.approx([p / sum(row["probs"]) for p in row["probs"]])
        assert row["scores"] == pytest.approx(list(expected.values()), abs=1e-5)


def test_models_health_ready_metrics_and_admin_routes(server, lora_dir_for_serve):
    hub, srv = server
    ids = [m["id"] for m in httpx.get(srv.url + "/v1/models").json()["data"]]
    assert ids[0] == "tiny" and {"legal", "finance", "medical"} <= set(ids)
    assert httpx.get(srv.url + "/health").json() == {"status": "ok"}
    assert httpx.get(srv.url + "/ready").json()["status"] == "ready"
    loaded = httpx.post(srv.url + "/v1/load_lora_adapter", json={"lora_name": "mine", "lora_path": str(lora_dir_for_serve)})
    assert loaded.status_code == 200 and loaded.json()["method"] == "lora"
    assert "mine" in [m["id"] for m in httpx.get(srv.url + "/v1/models").json()["data"]]
    answer = openai_client(srv.url).completions.create(model="mine", prompt="x", max_tokens=4, temperature=0)
    assert answer.choices[0].text.strip() == hub.generate("x", domain="mine", max_new_tokens=4, chat=False)
    refused = httpx.post(srv.url + "/v1/load_lora_adapter", json={"lora_name": "bad", "lora_path": "foreign"})
    assert refused.status_code == 400 and "made for base" in refused.json()["error"]["message"]
    assert httpx.post(srv.url + "/v1/unload_lora_adapter", json={"lora_name": "mine"}).json()["unloaded"] is True
    gone = httpx.post(srv.url + "/v1/completions", json={"model": "mine", "prompt": "x"})
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "model_not_found"
    text = httpx.get(srv.url + "/metrics").text
    for name in ("adapterhub_requests_total", "adapterhub_request_seconds_bucket",
                 "adapterhub_time_to_first_token_seconds_bucket", "adapterhub_prompt_tokens_total",
                 "adapterhub_generated_tokens_total", "adapterhub_queue_depth", "adapterhub_batch_rows_bucket",
                 "adapterhub_resident_adapters", "adapterhub_adapter_loads_total", "adapterhub_adapter_evictions_total"):
        assert name in text, name
    assert 'adapter="mine"' in text


def test_client_disconnect_frees_its_row(server, monkeypatch):
    hub, srv = server
    engine = srv.server.config.app.state.engine
    decode = engine.stepper.decode

    def slow(batch, tokens):
        time.sleep(0.02)
        return decode(batch, tokens)

    monkeypatch.setattr(engine.stepper, "decode", slow)
    before = engine.scheduler.cancelled_rows
    with httpx.Client(timeout=30) as http:
        with http.stream("POST", srv.url + "/v1/completions", json={
                "model": "legal", "prompt": "x", "max_tokens": 64, "temperature": 0, "stream": True}) as response:
            next(response.iter_lines())
    _wait(lambda: engine.scheduler.cancelled_rows == before + 1 and engine.scheduler.running == 0)
    with httpx.Client(timeout=0.3) as http:  # a non-streaming client that gives up
        with pytest.raises(httpx.ReadTimeout):
            http.post(srv.url + "/v1/completions", json={"model": "legal", "prompt": "x", "max_tokens": 64,
                                                         "temperature": 0})
    _wait(lambda: engine.scheduler.cancelled_rows == before + 2 and engine.scheduler.running == 0)
    assert all(info.pins == 0 for info in hub.resident())  # no pin left behind


def test_readme_serve_examples_run(server, tmp_path):
    """The README's Serve section: its curl, openai and lorax-client examples, against this server."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("## Serve over HTTP"):]
    section = section[:section.index("\n## ", 5)] if "\n## " in section[5:] else section
    blocks = re.findall(r"```(bash|python)\n(.*?)```", section, re.S)
    curls = [code for lang, code in blocks if lang == "bash" and code.lstrip().startswith("curl")]
    pythons = [code for lang, code in blocks if lang == "python"]
    assert curls and len(pythons) >= 2
    for code in curls:
        command = code.replace("http://127.0.0.1:8000", srv_url(server)).replace("\\\n", " ")
        result = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and '"error"' not in result.stdout, result.stdout + result.stderr
        json.loads(result.stdout)
    for code in pythons:
        script = tmp_path / "example.py"
        script.write_text(code.replace("http://127.0.0.1:8000", srv_url(server)))
        result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]


def srv_url(server):
    return server[1].url


@pytest.fixture(scope="module")
def lora_dir_for_serve(tiny_base, tmp_path_factory):
    from adapterhub.runtime.testing import make_random_adapters

    return make_random_adapters(tiny_base, tmp_path_factory.mktemp("mine"), r=2, seed=42, prefix="mine")[0]


def _metric(url, name):
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _wait(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)

