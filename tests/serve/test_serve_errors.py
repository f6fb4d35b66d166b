"""Every bad input gets one clear OpenAI-shaped error over raw HTTP, and the server keeps serving.
Also keys (401/403/429), the bounded queue (503), the access log and the loopback rule."""

from __future__ import annotations

import json
import logging
import threading
import time

import httpx
import pytest

from tests.helpers.serving import start_server

GOOD = {"model": "legal", "prompt": "Patient reports chest pain", "max_tokens": 4, "temperature": 0}


def post(url, path, body=None, *, raw=None, headers=None):
    content = raw if raw is not None else json.dumps(body).encode()
    return httpx.post(url + path, content=content, timeout=30,
                      headers={"content-type": "application/json", **(headers or {})})


def assert_error(response, status, code=None, match=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code"} and error["message"]
    if code:
        assert error["code"] == code, error
    if match:
        assert match in error["message"], error["message"]
    assert "Traceback" not in response.text


BAD_INPUTS = [  # (path, body or raw bytes, status, code, words in the message)
    ("/v1/completions", b'{"model": "legal", "prompt": ', 400, "invalid_json", "malformed JSON"),
    ("/v1/completions", b"[1, 2]", 400, "invalid_json", "object"),
    ("/v1/completions", {**GOOD, "max_tokens": "ten"}, 400, "invalid_value", "max_tokens"),
    ("/v1/completions", {**GOOD, "temperature": "hot"}, 400, "invalid_value", "temperature"),
    ("/v1/completions", {**GOOD, "max_tokens": 0}, 400, "invalid_value", "max_tokens"),
    ("/v1/completions", {**GOOD, "prompt": 7}, 400, "invalid_value", "prompt"),
    ("/v1/completions", {**GOOD, "surprise": True}, 400, "invalid_value", "surprise: unknown field"),
    ("/v1/completions", {"prompt": "x"}, 400, "invalid_value", "model"),
    ("/v1/completions", {**GOOD, "model": "nope"}, 404, "model_not_found", "'nope' does not exist"),
    ("/v1/completions", {**GOOD, "model": "/etc"}, 404, "model_not_found", "path"),
    ("/v1/completions", {**GOOD, "prompt": "chest pain " * 400}, 400, "context_length_exceeded", "context is 512"),
    ("/v1/completions", {**GOOD, "max_tokens": 65}, 400, "max_tokens_over_cap", "cap of 64"),
    ("/v1/completions", {**GOOD, "n": 2}, 400, "unsupported_parameter", "n=2 is not supported"),
    ("/v1/completions", {**GOOD, "prompt": ["a", "b"]}, 400, "unsupported_parameter", "one prompt per request"),
    ("/v1/completions", {**GOOD, "prompt": ""}, 400, "empty_prompt", "empty"),
    ("/v1/completions", {**GOOD, "stop": [""]}, 400, "invalid_value", "stop"),
    ("/v1/completions", {**GOOD, "model": "broken"}, 500, "adapter_corrupt", "sha256"),
    ("/v1/completions", {**GOOD, "model": "foreign"}, 400, "incompatible_adapter", "made for base"),
    ("/v1/chat/completions", {"model": "legal", "messages": []}, 400, "invalid_value", "at least one message"),
    ("/v1/chat/completions", {"model": "legal", "messages": [{"role": "robot", "content": "x"}]}, 400,
     "invalid_value", "messages.0.role"),
    ("/v1/chat/completions", {"model": "legal", "messages": [{"role": "assistant", "content": "x"}]}, 400,
     "invalid_value", "last message must be the user's"),
    ("/v1/chat/completions", {"model": "legal", "messages": [{"role": "user", "content": "x"}], "tools": [{}]},
     400, "unsupported_parameter", "tools"),
    ("/v1/classify", {"model": "legal", "input": ["x"]}, 400, "task_mismatch", None),
    ("/v1/classify", {"model": "tiny", "input": ["x"]}, 400, "task_mismatch", "bare base"),
    ("/v1/classify", {"model": "finance", "input": []}, 400, "invalid_value", "at least one text"),
    ("/generate", {"inputs": "x", "parameters": {"adapter_id": "nope"}}, 404, "model_not_found", None),
    ("/generate", {"inputs": "x", "parameters": {"max_new_tokens": 1000}}, 400, "max_tokens_over_cap", None),
    ("/generate", {"inputs": "x", "parameters": {"best_of": 2, "do_sample": True}}, 400, "unsupported_parameter",
     "best_of"),
    ("/generate", {"inputs": "x", "parameters": {"adapter_id": "/tmp", "adapter_source": "local"}}, 400,
     "unsupported_parameter", "load_lora_adapter"),
    ("/v1/load_lora_adapter", {"lora_name": "x", "lora_path": "/no/such/dir"}, 400, "invalid_adapter",
     "could not be loaded"),  # the same answer whether the folder exists or not (no probing without a key)
    ("/v1/unload_lora_adapter", {"lora_name": "never-loaded"}, 404, "model_not_found", None),
    ("/v1/nothing", {}, 404, "not_found", "no route"),
]


@pytest.mark.parametrize("path, body, status, code, match", BAD_INPUTS,
                         ids=[f"{i}-{case[0]}-{case[3]}" for i, case in enumerate(BAD_INPUTS)])
def test_bad_input_is_one_clear_error(server, path, body, status, code, match):
    hub, srv = server
    raw = body if isinstance(body, bytes) else None
    response = post(srv.url, path, body, raw=raw)
    assert_error(response, status, code, match)
    if path == "/generate":
        assert response.json()["error_type"] in ("validation", "generation")  # what lorax-client reads
    assert post(srv.url, "/v1/completions", GOOD).status_code == 200  # still serving


def test_method_not_allowed_and_stream_errors_are_shaped(server):
    hub, srv = server
    assert_error(httpx.get(srv.url + "/v1/completions"), 405, "method_not_allowed")
    streamed = post(srv.url, "/v1/chat/completions", {"model": "nope", "stream": True,
                                                      "messages": [{"role": "user", "content": "x"}]})
    assert_error(streamed, 404, "model_not_found")


def test_errors_speak_http_not_python_or_the_command_line(server):
    hub, srv = server
    unknown = post(srv.url, "/v1/completions", {**GOOD, "model": "nope"})
    assert_error(unknown, 404, "model_not_found", "servable: tiny")  # which models exist, the base first
    assert all(name in unknown.json()["error"]["message"] for name in ("legal", "finance", "medical"))
    corrupt = post(srv.url, "/v1/completions", {**GOOD, "model": "broken"})
    assert_error(corrupt, 500, "adapter_corrupt", "other models are still served")
    mismatch = post(srv.url, "/v1/classify", {"model": "legal", "input": ["x"]})
    assert_error(mismatch, 400, "task_mismatch", "GET /v1/models")
    for answer in (unknown, corrupt, mismatch):
        message = answer.json()["error"]["message"]
        assert not any(word in message for word in ("hub.", "registry.", "adapterhub ", "--")), message


def test_full_queue_answers_503_with_retry_after(tiny_base, serve_registry):
    hub, srv = start_server(tiny_base, serve_registry, max_rows=1, max_queue=1)
    try:
        engine = srv.server.config.app.state.engine
        decode = engine.stepper.decode
        engine.stepper.decode = lambda batch, tokens: (time.sleep(0.02), decode(batch, tokens))[1]
        answers = []

        def ask():
            answers.append(post(srv.url, "/v1/completions", {**GOOD, "max_tokens": 30}))

        threads = [threading.Thread(target=ask) for _ in range(4)]
        for thread in threads:
            thread.start()
            time.sleep(0.05)
        for thread in threads:
            thread.join()
        statuses = sorted(a.status_code for a in answers)
        assert statuses.count(200) >= 2 and 503 in statuses, statuses
        busy = next(a for a in answers if a.status_code == 503)
        assert_error(busy, 503, "queue_full")
        assert int(busy.headers["retry-after"]) >= 1
    finally:
        srv.stop()
        hub.close()


def test_keys_401_403_429_and_the_access_log(tiny_base, serve_registry, tmp_path, monkeypatch, caplog):
    from adapterhub.cli import main

    monkeypatch.setenv("ADAPTERHUB_HOME", str(tmp_path))
    keys = {}
    for argv in (["user", "--allow", "legal", "--rpm", "3"], ["ops", "--admin"], ["gone"]):
        import contextlib
        import io

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(["keys", "create", *argv, "--json"]) == 0
        created = json.loads(out.getvalue())
        keys[created["name"]] = created["key"]
    assert main(["keys", "revoke", "gone"]) == 0
    assert main(["keys", "create", "ops"]) == 2  # a live name is not reused
    stored = (tmp_path / "keys.sqlite").read_bytes()
    assert all(key.encode() not in stored for key in keys.values())  # only salted hashes

    hub, srv = start_server(tiny_base, serve_registry, auth=True)
    caplog.set_level(logging.INFO, logger="adapterhub.access")
    try:
        def auth(name):
            return {"Authorization": f"Bearer {keys[name]}"}

        assert_error(post(srv.url, "/v1/completions", GOOD), 401, "missing_api_key")
        assert_error(post(srv.url, "/v1/completions", GOOD, headers={"Authorization": "Bearer ahk_nope"}), 401)
        assert_error(post(srv.url, "/v1/completions", GOOD, headers=auth("gone")), 401, "invalid_api_key")
        assert_error(post(srv.url, "/v1/completions", {**GOOD, "model": "medical"}, headers=auth("user")), 403,
                     "model_not_allowed")
        assert_error(post(srv.url, "/v1/load_lora_adapter", {"lora_name": "x"}, headers=auth("user")), 403,
                     "admin_required")
        assert [m["id"] for m in httpx.get(srv.url + "/v1/models", headers=auth("ops")).json()["data"]][0] == "tiny"
        # the 403 above counted against the 3 requests per minute (an admin refusal comes before counting)
        assert [post(srv.url, "/v1/completions", GOOD, headers=auth("user")).status_code for _ in range(2)] == [200] * 2
        limited = post(srv.url, "/v1/completions", GOOD, headers=auth("user"))
        assert_error(limited, 429, "rate_limit_exceeded")
        assert int(limited.headers["retry-after"]) >= 1
        assert post(srv.url, "/v1/completions", {**GOOD, "model": "medical"}, headers=auth("ops")).status_code == 200
    finally:
        srv.stop()
        hub.close()
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "adapterhub.access"]
    served = [line for line in lines if line["status"] == 200 and line["path"] == "/v1/completions"]
    assert served and served[-1]["key"] == "ops" and served[-1]["adapter"] == "medical"
    assert served[-1]["completion_tokens"] >= 1 and "latency_ms" in served[-1] and "text_in" not in served[-1]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert all(key not in logged for key in keys.values()) and "chest pain" not in logged


def test_non_loopback_host_needs_auth_or_insecure(capsys):
    from adapterhub.cli import main
    from adapterhub.serve.server import check_exposure

    assert main(["serve", "--host", "0.0.0.0"]) == 2
    assert "--auth" in capsys.readouterr().err
    check_exposure("127.0.0.1", auth=False, insecure=False)
    check_exposure("::1", auth=False, insecure=False)
    check_exposure("0.0.0.0", auth=True, insecure=False)
    check_exposure("10.1.2.3", auth=False, insecure=True)
