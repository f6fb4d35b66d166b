"""The service on a local Ray Serve cluster: 2 replicas of 1 CPU each, requests routed by adapter.

Replicas start with empty registries of their own and pull each adapter by commit from a
Hub-compatible server on 127.0.0.1 (``--hub-namespace``); the same openai client that talks
to the single-process server talks to the router.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import defaultdict

import pytest

from tests.helpers.hubserver import HubServer

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

TOKEN = "hf_alice_ray_token"
ADAPTERS = ["a0", "a1", "a2", "a3"]
PROMPT = "The quarterly revenue of the company"
PROPAGATION_S = 2.0  # time for a new adapter's home to reach the router before the next placement


@pytest.fixture(scope="module")
def cluster(tiny_base, tiny_llama_dir, tmp_path_factory):
    """``(url, reference answers)``: the Ray app on a free port, adapters a0..a3 on the local Hub."""
    from adapterhub import AdapterHub, Registry
    from adapterhub.hf import push
    from adapterhub.runtime.testing import make_random_adapters
    from adapterhub.serve import ServeOptions
    from adapterhub.serve.replicas import ReplicaSettings, ray_app
    from adapterhub.serve.server import free_port

    root = tmp_path_factory.mktemp("ray")
    env = {"HF_ENDPOINT": "", "HF_TOKEN": TOKEN, "HF_HOME": str(root / "hf-home"), "HF_HUB_DISABLE_XET": "1",
           "HF_HUB_OFFLINE": "0", "ADAPTERHUB_HOME": str(root / "home")}
    with HubServer(tokens={TOKEN: ("alice",)}) as hub_server:
        env["HF_ENDPOINT"] = hub_server.url
        saved = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        try:
            seed = Registry(root / "seed")
            dirs = make_random_adapters(tiny_base, root / "dirs", count=len(ADAPTERS), r=4, prefix="ray")
            for name, folder in zip(ADAPTERS, dirs):
                seed.add(folder, name, base=tiny_base)
                push(name, f"alice/{name}", registry=seed)
            with AdapterHub(tiny_base) as hub:
                expected = {name: hub.generate(PROMPT, domain=str(folder), max_new_tokens=6, chat=False)
                            for name, folder in zip(ADAPTERS, dirs)}
            settings = ReplicaSettings(base=str(tiny_llama_dir), device="cpu", registry=str(root / "replica-{replica}"),
                                       hub_namespace="alice", replicas=2, adapters_per_replica=2, cpus_per_replica=1,
                                       options=ServeOptions(max_rows=8, max_new_tokens=64, base_name="tiny"), env=env)
            port = free_port()
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            serve.run(ray_app(settings), name="adapterhub", route_prefix="/")
            yield f"http://127.0.0.1:{port}", expected
        finally:
            try:
                serve.shutdown()
            finally:
                ray.shutdown()
                for name, value in saved.items():
                    os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)


def _client(url, **kwargs):
    import openai

    return openai.OpenAI(base_url=url + "/v1", api_key="unused", **kwargs)


def _ask(client, model):
    raw = client.completions.with_raw_response.create(model=model, prompt=PROMPT, max_tokens=6, temperature=0)
    replica = raw.headers["x-adapterhub-replica"]
    resident = [name for name in raw.headers["x-adapterhub-resident"].split(",") if name]
    return raw.parse().choices[0].text.strip(), replica, resident


def test_requests_are_routed_by_adapter_and_answer_like_one_server(cluster):
    url, expected = cluster
    client = _client(url, max_retries=0)
    served = defaultdict(set)  # replica -> adapters it answered
    last_resident = {}
    hits = requests = 0
    for round_ in range(3):
        for name in ADAPTERS:
            answer, replica, resident = _ask(client, name)
            assert answer == expected[name], (name, replica)
            if round_:  # after the first round every adapter has a home; count the requests that found it
                hits += name in last_resident.get(replica, ())
                requests += 1
            served[replica].add(name)
            last_resident[replica] = resident
            if not round_:  # a replica tells routers what it holds through Ray's controller, asynchronously
                time.sleep(PROPAGATION_S)  # (every 0.1 s, then a long poll): on a loaded machine that lags
    assert len(served) == 2, "both replicas took traffic"
    for replica, resident in last_resident.items():
        assert set(resident) <= served[replica], "a replica only holds adapters its own traffic asked for"
        assert len(resident) <= 2
    assert hits / requests >= 0.75, f"only {hits}/{requests} requests reached a replica holding their adapter"
    stream = client.completions.create(model="a1", prompt=PROMPT, max_tokens=6, temperature=0, stream=True)
    assert "".join(chunk.choices[0].text for chunk in stream if chunk.choices).strip() == expected["a1"]
    assert "tiny" in {m.id for m in client.models.list().data}
    import openai

    with pytest.raises(openai.NotFoundError) as caught:  # errors keep the single server's shape
        client.completions.create(model="nope", prompt="x", max_tokens=2)
    assert caught.value.body["code"] == "model_not_found"
    print(f"routing: {hits}/{requests} requests after the first round reached a replica holding their adapter")


def test_a_killed_replica_loses_no_request_the_client_retries_and_comes_back(cluster):
    url, expected = cluster
    _, victim, _ = _ask(_client(url, max_retries=0), "a0")
    results, errors = [], []

    def worker(index):
        client = _client(url, max_retries=6, timeout=120)
        name = ADAPTERS[index % len(ADAPTERS)]
        try:
            results.append((name, client.completions.create(model=name, prompt=PROMPT, max_tokens=6,
                                                            temperature=0).choices[0].text.strip()))
        except Exception as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    os.kill(int(victim.rsplit("pid=", 1)[1]), signal.SIGKILL)  # mid-load
    for thread in threads:
        thread.join(300)
    assert not errors, errors
    assert sorted(results) == sorted((ADAPTERS[i % 4], expected[ADAPTERS[i % 4]]) for i in range(12))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        deployment = serve.status().applications["adapterhub"].deployments["AdapterReplica"]
        if deployment.replica_states.get("RUNNING", 0) == 2:
            break
        time.sleep(1)
    else:
        pytest.fail(f"Ray did not bring the replica back: {deployment.replica_states}")
