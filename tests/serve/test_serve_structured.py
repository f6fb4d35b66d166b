"""Structured output over HTTP on a real uvicorn: OpenAI ``response_format`` (json_schema, json_object) on chat and
completions, streaming, LoRAX ``parameters.response_format``, the ``openai`` client's ``parse()``, clear 400s, and
adapters' contracts applied by the server and listed by ``GET /v1/models``."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import httpx
import jsonschema
import pytest
from pydantic import BaseModel, Field

from adapterhub import Registry
from adapterhub.registry.contract import set_contract
from adapterhub.runtime.testing import make_random_adapters
from tests.helpers.serving import start_server
from tests.helpers.schemas import FLAG, PICK


class Ticket(BaseModel):
    kind: Literal["bug", "feature"]
    urgent: bool
    points: int = Field(ge=1, le=8)


@pytest.fixture(scope="module")
def served(tiny_base, tmp_path_factory):
    """``(hub, server)`` over legal (LoRA), legal@2 (its contract: FLAG, max_tokens 30), medical (prefix),
    finance (classification)."""
    root = tmp_path_factory.mktemp("structured-serve")
    lora = make_random_adapters(tiny_base, root, count=2, r=4, prefix="lora", seed=11)
    prefix = make_random_adapters(tiny_base, root, method="prefix", num_virtual_tokens=4, prefix="pre")
    registry = Registry(tmp_path_factory.mktemp("structured-serve-registry"))
    registry.add(lora[0], "legal", base=tiny_base)
    set_contract(registry, "legal@1", {"schema": FLAG, "max_tokens": 30, "temperature": 0,
                                       "evaluated_on": {"none": {"accuracy": 0.75}}})
    registry.add(lora[1], "finance", base=tiny_base,
                 task={"type": "classification", "labels": ["up", "down"], "prompt_template": "{text}"})
    registry.add(prefix[0], "medical", base=tiny_base)
    hub, thread = start_server(tiny_base, registry)
    yield hub, thread
    thread.stop()
    hub.close()


def _schema_format(schema, name="answer"):
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def _post(url, path, body):
    with httpx.Client(timeout=120) as http:
        return http.post(url + path, json=body)


def test_mixed_concurrent_requests_every_schema_answer_valid(served):
    """Schema rows of two schemas, json_object rows and free rows, over LoRA, prefix and the base, at once."""
    hub, server = served
    models = ["legal@1", "medical", "tiny", "legal@1", "medical", "tiny", "legal@1", "medical"]
    formats = [_schema_format(PICK), _schema_format(FLAG), {"type": "json_object"}, None,
               _schema_format(FLAG), _schema_format(PICK), {"type": "text"}, {"type": "json_object"}]
    jobs = [(i, model, fmt) for i, (model, fmt) in enumerate(zip(models, formats))] * 2

    def ask(job):
        index, model, fmt = job
        body = {"model": model, "messages": [{"role": "user", "content": f"item {index}"}], "max_tokens": 48,
                "temperature": 0, **({"response_format": fmt} if fmt else {})}
        return fmt, _post(server.url, "/v1/chat/completions", body)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, jobs))
    for fmt, response in answers:
        assert response.status_code == 200, response.text
        choice = response.json()["choices"][0]
        if fmt is None or fmt["type"] == "text":
            continue
        if fmt["type"] == "json_object" and choice["finish_reason"] == "length":
            continue  # any object may run on (a random model writes long strings): cut, and never claimed valid
        assert choice["finish_reason"] == "stop"
        value = json.loads(choice["message"]["content"])
        if fmt["type"] == "json_schema":
            jsonschema.validate(value, fmt["json_schema"]["schema"])
        else:
            assert isinstance(value, dict)


def test_stream_ends_exactly_at_the_closing_brace(served):
    hub, server = served
    body = {"model": "medical", "prompt": "Patient reports", "max_tokens": 48, "temperature": 0, "stream": True,
            "response_format": _schema_format(PICK)}
    texts, finishes = [], []
    with httpx.Client(timeout=120) as http, http.stream("POST", server.url + "/v1/completions", json=body) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                choice = json.loads(line[6:])["choices"][0]
                texts.append(choice["text"])
                finishes.append(choice["finish_reason"])
    text = "".join(texts)
    jsonschema.validate(json.loads(text), PICK)
    assert text.endswith("}") and finishes[-1] == "stop"
    tokens = hub.tokenizer(text)["input_ids"]
    assert len([t for t in texts if t]) <= len(tokens) + 1  # nothing was generated after the brace


def test_too_small_max_tokens_is_length_never_valid(served):
    import openai

    hub, server = served
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    answer = client.chat.completions.create(model="legal", messages=[{"role": "user", "content": "x"}],
                                            max_tokens=3, temperature=0, response_format=_schema_format(PICK))
    assert answer.choices[0].finish_reason == "length"
    with pytest.raises(json.JSONDecodeError):
        json.loads(answer.choices[0].message.content)
    with pytest.raises(openai.LengthFinishReasonError):
        client.beta.chat.completions.parse(model="legal", messages=[{"role": "user", "content": "x"}],
                                           max_tokens=3, temperature=0, response_format=Ticket)


def test_openai_client_parse_round_trip(served):
    import openai

    hub, server = served
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    for model in ("legal", "medical", "tiny"):
        completion = client.beta.chat.completions.parse(
            model=model, messages=[{"role": "user", "content": "The login page crashes"}], max_tokens=64,
            temperature=0, response_format=Ticket)
        parsed = completion.choices[0].message.parsed
        assert isinstance(parsed, Ticket) and 1 <= parsed.points <= 8


def test_lorax_response_format(served):
    hub, server = served
    for response_format in ({"type": "json_object", "schema": FLAG}, _schema_format(PICK)):
        response = _post(server.url, "/generate", {"inputs": "hello", "parameters": {
            "adapter_id": "medical", "max_new_tokens": 40, "response_format": response_format}})
        assert response.status_code == 200, response.text
        schema = response_format.get("schema") or response_format["json_schema"]["schema"]
        jsonschema.validate(json.loads(response.json()["generated_text"]), schema)


@pytest.mark.parametrize("response_format, words", [
    (_schema_format({"type": "array", "uniqueItems": True}), "uniqueItems"),
    ({"type": "json_schema", "json_schema": {"schema": {"not": {}}}}, "not"),
    ({"type": "yaml"}, "response_format.type"),
])
def test_unsupported_schema_is_one_clear_400(served, response_format, words):
    hub, server = served
    response = _post(server.url, "/v1/chat/completions", {"model": "legal", "max_tokens": 8,
                                                          "messages": [{"role": "user", "content": "x"}],
                                                          "response_format": response_format})
    assert response.status_code == 400
    assert words in response.json()["error"]["message"] and "Traceback" not in response.text


def test_contract_applied_where_silent_and_overridden(served):
    hub, server = served
    ask = {"model": "legal@2", "messages": [{"role": "user", "content": "hello"}]}
    silent = _post(server.url, "/v1/chat/completions", ask).json()
    jsonschema.validate(json.loads(silent["choices"][0]["message"]["content"]), FLAG)  # the contract's schema
    assert silent["choices"][0]["message"]["content"] == hub.generate("hello", domain="legal@2")
    override = _post(server.url, "/v1/chat/completions", {**ask, "response_format": _schema_format(PICK)}).json()
    jsonschema.validate(json.loads(override["choices"][0]["message"]["content"]), PICK)
    free = _post(server.url, "/v1/chat/completions", {**ask, "response_format": {"type": "text"}, "max_tokens": 4})
    assert free.json()["usage"]["completion_tokens"] <= 4
    conflict = _post(server.url, "/v1/chat/completions", {"model": "finance", "max_tokens": 8,
                                                          "messages": [{"role": "user", "content": "x"}],
                                                          "response_format": {"type": "json_object"}})
    assert conflict.status_code == 400 and conflict.json()["error"]["code"] == "contract_conflict"


def test_models_list_shows_contracts(served):
    hub, server = served
    with httpx.Client(timeout=30) as http:
        listed = {m["id"]: m for m in http.get(server.url + "/v1/models").json()["data"]}
    contract = listed["legal"]["contract"]  # the name means its latest version, legal@2
    assert contract["schema"] == FLAG and contract["max_tokens"] == 30
    assert contract["evaluated_on"] == {"none": {"accuracy": 0.75}} and "prompt_template" in contract["template"]
    assert "contract" not in listed["medical"]
