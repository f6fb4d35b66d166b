"""A weighted mix over HTTP: ``model = "legal:0.7+finance:0.3"`` answers what ``hub.generate`` answers with
``domain={"legal": 0.7, "finance": 0.3}`` (itself equal to PEFT's cat merge), streaming or not, alone or
beside single-adapter rows; a prefix adapter in a mix is one clear 400."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx


PROMPT = "The quarterly revenue of the company rose while margins narrowed"
MIX = "legal:0.7+finance:0.3"


def test_a_weighted_mix_answers_like_the_hub(server):
    import openai

    hub, srv = server
    expected = hub.generate(PROMPT, domain={"legal": 0.7, "finance": 0.3}, max_new_tokens=8, chat=False)
    single = hub.generate(PROMPT, domain="legal", max_new_tokens=8, chat=False)
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)

    def ask(model):
        return client.completions.create(model=model, prompt=PROMPT, max_tokens=8, temperature=0).choices[0].text

    with ThreadPoolExecutor(4) as pool:  # mixed rows and plain rows in the same running batch
        answers = list(pool.map(ask, [MIX, "legal", MIX, "legal"]))
    assert [a.strip() for a in answers] == [expected, single, expected, single]
    stream = client.completions.create(model=MIX, prompt=PROMPT, max_tokens=8, temperature=0, stream=True)
    assert "".join(chunk.choices[0].text for chunk in stream if chunk.choices).strip() == expected
    assert hub.resident() and all(info.name != MIX for info in hub.resident())  # nothing merged was kept


def test_a_prefix_adapter_cannot_join_a_mix_over_http(server):
    _, srv = server
    with httpx.Client(base_url=srv.url, timeout=60) as http:
        answer = http.post("/v1/completions", json={"model": "legal:0.5+medical:0.5", "prompt": "x", "max_tokens": 2})
    assert answer.status_code == 400 and "cannot join the weighted mix" in answer.json()["error"]["message"]
