"""The server on the real 135M default base: concurrent mixed LoRA / prefix / bare answers through the
openai client equal ``hub.generate`` token for token (one end-to-end test)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

pytestmark = pytest.mark.realbase


def test_real_base_server_answers_equal_hub_generate_under_load(tmp_path):
    import openai

    from adapterhub import AdapterHub, load_base
    from adapterhub.runtime.testing import make_random_adapters
    from adapterhub.serve import ServeOptions, ServerThread, build_app

    base = load_base(device="cpu", progress=False)
    hub = AdapterHub(base)
    hub.load(make_random_adapters(base, tmp_path, r=8, std=0.02)[0], name="lora")
    hub.load(make_random_adapters(base, tmp_path, method="prefix", num_virtual_tokens=8, std=0.5)[0], name="prefix")
    jobs = [("What is the capital of France?", "lora"), ("Name three primary colours.", "prefix"),
            ("Either party may terminate this Agreement. Summarise.", None), ("What is 2 + 2?", "lora")]
    expected = [hub.generate(text, domain=domain, max_new_tokens=16) for text, domain in jobs]
    with ServerThread(build_app(hub, ServeOptions(base_name="smollm2"))) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)

        def ask(job):
            text, domain = job
            answer = client.chat.completions.create(model=domain or "smollm2", max_tokens=16, temperature=0,
                                                    messages=[{"role": "user", "content": text}])
            return answer.choices[0].message.content.strip()

        with ThreadPoolExecutor(len(jobs)) as pool:
            assert list(pool.map(ask, jobs)) == expected
        streamed = client.chat.completions.create(model="smollm2", max_tokens=16, temperature=0, stream=True,
                                                  messages=[{"role": "user", "content": jobs[2][0]}])
        assert "".join(chunk.choices[0].delta.content or "" for chunk in streamed).strip() == expected[2]
        assert "Paris" in hub.generate(jobs[0][0], domain=None, max_new_tokens=16)  # the real model, not noise
    hub.close()
