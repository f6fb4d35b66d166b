"""A classifier adapter asked for free text answers with its own template; body mistakes name the field meant."""

from __future__ import annotations

import httpx


def test_a_classifier_on_completions_and_generate_uses_its_own_template(server):
    hub, srv = server
    prompt = "Revenue fell sharply"
    expected = hub.generate(prompt, domain="finance", max_new_tokens=6)  # the adapter's template, as hub.generate
    with httpx.Client(timeout=60) as http:
        completion = http.post(srv.url + "/v1/completions", json={"model": "finance", "prompt": prompt,
                                                                   "max_tokens": 6, "temperature": 0})
        generated = http.post(srv.url + "/generate", json={"inputs": prompt, "parameters": {
            "adapter_id": "finance", "max_new_tokens": 6}})
        usage = completion.json()["usage"]["prompt_tokens"]
    assert completion.status_code == 200 and generated.status_code == 200, completion.text
    assert completion.json()["choices"][0]["text"].strip() == expected
    assert generated.json()["generated_text"].strip() == expected
    raw_tokens = hub.base.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert usage > len(raw_tokens), "the template's tokens are in the prompt"


def test_classify_with_inputs_names_the_field_meant(server):
    _, srv = server
    with httpx.Client(timeout=30) as http:
        answer = http.post(srv.url + "/v1/classify", json={"model": "finance", "inputs": ["Revenue fell."]})
    assert answer.status_code == 400
    message = answer.json()["error"]["message"]
    assert "inputs: unknown field (did you mean 'input'?)" in message and "input: field required" in message
