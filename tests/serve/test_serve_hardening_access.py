"""Hardening of keys, bodies and what the server tells whom (issue 32, items 7-11): key lookups never block the
event loop, odd JSON is a 400, unauthenticated routes leak no adapter names or paths, ``lora_name`` follows the
registry's name rules, and the lower items (key file mode, slow clients, classify's cap, labels, redirects)."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import stat
import threading

import httpx
import pytest

from adapterhub.serve.auth import KeyStore
from tests.helpers.serving import start_server

JSON = {"content-type": "application/json"}


def post(url, path, body=None, *, raw=None, headers=None):
    content = raw if raw is not None else json.dumps(body).encode()
    return httpx.post(url + path, content=content, timeout=60, headers={**JSON, **(headers or {})})


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def keyed(tiny_base, serve_registry, tmp_path, monkeypatch):
    """``(srv, keys, store)``: a server with --auth and keys ``admin`` (admin), ``user`` and ``fresh`` (legal only)."""
    monkeypatch.setenv("ADAPTERHUB_HOME", str(tmp_path))
    store = KeyStore(tmp_path / "keys.sqlite")
    keys = {"admin": store.create("admin", admin=True), "user": store.create("user", allow=["legal"]),
            "fresh": store.create("fresh", allow=["legal"])}
    hub, srv = start_server(tiny_base, serve_registry, auth=True, keys_path=str(store.path))
    yield srv, keys, store
    srv.stop()
    hub.close()


def test_a_busy_key_store_answers_503_and_cached_keys_keep_working(keyed):
    srv, keys, store = keyed
    body = {"model": "legal", "prompt": "x", "max_tokens": 1}
    assert post(srv.url, "/v1/completions", body, headers=bearer(keys["user"])).status_code == 200
    locker = sqlite3.connect(store.path, timeout=1, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        answer = {}
        waiting = threading.Thread(target=lambda: answer.update(
            r=post(srv.url, "/v1/completions", body, headers=bearer(keys["fresh"]))))
        waiting.start()
        assert httpx.get(srv.url + "/health", timeout=60).status_code == 200  # the loop is free meanwhile
        cached = post(srv.url, "/v1/completions", body, headers=bearer(keys["user"]))
        assert cached.status_code == 200, cached.text  # verified a moment ago: no lookup
        waiting.join(60)
        assert answer["r"].status_code == 503 and answer["r"].json()["error"]["code"] == "keys_busy", answer["r"].text
        assert "Retry-After" in answer["r"].headers
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert post(srv.url, "/v1/completions", body, headers=bearer(keys["fresh"])).status_code == 200


def test_with_auth_every_route_but_health_ready_and_the_console_page_needs_a_key(keyed):
    """A route that forgot to await the (async) key check would answer without a key: every route is tried."""
    srv, _, _ = keyed
    from fastapi.routing import APIRoute

    routes = [r for r in srv.server.config.app.routes if isinstance(r, APIRoute)]
    assert len(routes) > 10
    for route in routes:
        path = route.path.replace("{name}", "legal").replace("{version}", "1")
        for method in route.methods:
            answer = httpx.request(method, srv.url + path, content=b"{}", headers=JSON, timeout=60)
            if path in ("/health", "/ready", "/ui"):  # the console's page holds no data; its calls need the key
                assert answer.status_code == 200, (method, path, answer.text)
            else:
                assert answer.status_code == 401, (method, path, answer.status_code, answer.text)


@pytest.mark.parametrize("raw,match", [
    (b"[" * 100_000 + b"]" * 100_000, "nested"),
    (b'{"model": "legal", "prompt": "\\ud800", "max_tokens": 1}', "surrogate"),
])
def test_deep_nesting_and_lone_surrogates_are_400(server, raw, match):
    _, srv = server
    response = post(srv.url, "/v1/completions", raw=raw)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json", response.text
    assert match in response.json()["error"]["message"]


def test_with_auth_ready_and_metrics_leak_nothing_and_errors_hide_paths(keyed, serve_registry):
    srv, keys, _ = keyed
    assert post(srv.url, "/v1/completions", {"model": "legal", "prompt": "x", "max_tokens": 1},
                headers=bearer(keys["admin"])).status_code == 200
    assert httpx.get(srv.url + "/ready").json() == {"status": "ready"}
    assert httpx.get(srv.url + "/metrics").status_code == 401
    assert httpx.get(srv.url + "/metrics", headers=bearer(keys["user"])).status_code == 403
    scraped = httpx.get(srv.url + "/metrics", headers=bearer(keys["admin"]))
    assert scraped.status_code == 200 and "adapterhub_requests" in scraped.text
    broken = post(srv.url, "/v1/completions", {"model": "broken", "prompt": "x", "max_tokens": 1},
                  headers=bearer(keys["admin"]))
    assert broken.status_code == 500 and broken.json()["error"]["code"] == "adapter_corrupt"
    assert str(serve_registry.root) not in broken.text and "sha256" in broken.text, broken.text


@pytest.mark.parametrize("name", ["a:1+b:1", "../x", "x\ny", "x" * 100_000, "tiny", "base", "legal@7", "legal"])
def test_lora_name_follows_the_registry_rules_and_never_shadows(server, tmp_path, name):
    hub, srv = server
    from adapterhub.runtime.testing import make_random_adapters

    folder = make_random_adapters(hub.base, tmp_path, count=1, r=2, prefix="shadow")[0]
    response = post(srv.url, "/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(folder)})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_value", response.text
    assert name not in {info.name for info in hub.resident()}


def test_a_lora_name_without_a_path_is_a_registry_reference_to_load(server):
    hub, srv = server
    response = post(srv.url, "/v1/load_lora_adapter", {"lora_name": "legal@2"})
    assert response.status_code == 200, response.text
    assert "legal@2" in {info.name for info in hub.resident()}
    assert post(srv.url, "/v1/load_lora_adapter", {"lora_name": "legal:1+legal@2:1"}).status_code == 400


def test_the_keys_file_is_private(tmp_path):
    store = KeyStore(tmp_path / "keys.sqlite")
    store.create("ops")
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600


def test_slow_headers_are_timed_out(tiny_base, serve_registry):
    hub, srv = start_server(tiny_base, serve_registry, header_timeout_s=0.5)
    try:
        with socket.create_connection((srv.host, srv.port)) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finishes its headers
            sock.settimeout(30)
            assert sock.recv(1024) == b""  # the server closed it
    finally:
        srv.stop()
        hub.close()


def test_open_connections_are_capped(tiny_base, serve_registry):
    hub, srv = start_server(tiny_base, serve_registry, max_connections=2)
    held = [socket.create_connection((srv.host, srv.port)) for _ in range(2)]
    try:
        assert httpx.get(srv.url + "/health").status_code == 503
        for sock in held:
            sock.close()
        held = []
        while httpx.get(srv.url + "/health").status_code != 200:  # the server notices the closed sockets
            pass
    finally:
        for sock in held:
            sock.close()
        srv.stop()
        hub.close()


def test_classify_caps_its_inputs_and_names_bad_mix_weights(server):
    _, srv = server
    many = post(srv.url, "/v1/classify", {"model": "finance", "input": ["good"] * 20_000})
    assert many.status_code == 400 and "at most" in many.json()["error"]["message"], many.text
    heavy = post(srv.url, "/v1/classify", {"model": "finance:1e6+legal:1", "input": "good"})
    assert heavy.status_code == 400 and "weight" in heavy.json()["error"]["message"], heavy.text


def test_tag_has_its_own_endpoint_label_and_slashes_never_redirect(server):
    _, srv = server
    post(srv.url, "/v1/tag", {"model": "finance", "input": "x"})
    assert 'endpoint="/v1/tag"' in httpx.get(srv.url + "/metrics").text
    slash = httpx.get(srv.url + "/v1/models/", headers={"host": f"localhost:{srv.port}"})
    assert slash.status_code == 404 and "location" not in slash.headers


def test_insecure_says_so(capsys):
    from adapterhub.serve.server import check_exposure

    check_exposure("0.0.0.0", auth=False, insecure=True)
    assert "WARNING" in capsys.readouterr().err
