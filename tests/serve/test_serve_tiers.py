"""Many adapters on a real server (tiny llama, real openai client): residency tiers, prefetch, budgets, and what
``/v1/adapters`` and ``/metrics`` say about them.

More distinct adapters than device slots churn through the server from concurrent clients: every answer equals
``hub.generate`` with that adapter alone, a pinned adapter is never evicted, a corrupt or foreign adapter fails
only its own requests, sampled residency never exceeds its budgets, and the reports agree with what was served.
"""

from __future__ import annotations

import os
import random
import re
import stat
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

PROMPTS = ["Patient reports chest pain", "The quarterly revenue rose", "This Agreement shall be governed by"]
SHAPES = [  # (count, rank, targets): ranks and target sets differ, so bytes differ (no padding to the largest)
    (4, 2, ("q_proj", "v_proj")), (3, 4, ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                          "down_proj")), (2, 8, ("q_proj", "k_proj", "v_proj", "o_proj"))]


@pytest.fixture(scope="module")
def many(tiny_base, other_tiny_llama_dir, tmp_path_factory):
    """``(registry, names, sizes)``: nine LoRA adapters of three shapes, ``broken`` (a byte flipped after
    registration) and ``foreign`` (made for another base); ``sizes``: each good adapter's resident bytes."""
    from adapterhub import AdapterHub, Registry, load_base
    from adapterhub.runtime.testing import make_random_adapters

    root = tmp_path_factory.mktemp("many-adapters")
    registry = Registry(tmp_path_factory.mktemp("many-registry"))
    names = []
    for index, (count, rank, targets) in enumerate(SHAPES):
        for folder in make_random_adapters(tiny_base, root, count=count, r=rank, target_modules=targets,
                                           seed=10 * index, prefix=f"s{index}"):
            names.append(f"a{len(names)}")
            registry.add(folder, names[-1], base=tiny_base)
    spare = make_random_adapters(tiny_base, root, count=1, r=2, seed=99, prefix="spare")[0]
    broken = registry.add(spare, "broken", base=tiny_base)
    weights = broken.path / "adapter_model.safetensors"
    os.chmod(weights, stat.S_IRUSR | stat.S_IWUSR)
    data = bytearray(weights.read_bytes())
    data[-8:] = b"\x00" * 8
    weights.write_bytes(bytes(data))
    registry.add(spare, "foreign", base=load_base(str(other_tiny_llama_dir), device="cpu"))
    with AdapterHub(tiny_base, registry=registry) as hub:
        sizes = {name: hub.load(name).bytes for name in names}
    return registry, names, sizes


@pytest.fixture
def closing():
    """``closing(hub)``: the hub is closed after the test (its slots leave the layers every hub on the base shares)."""
    hubs = []
    yield hubs.append
    for hub in hubs:
        hub.close()


def serve(hub, **options):
    from adapterhub.serve import ServeOptions, ServerThread, build_app

    app = build_app(hub, ServeOptions(**{"max_rows": 8, "max_queue": 64, "max_new_tokens": 32, "base_name": "tiny",
                                         **options}))
    return ServerThread(app).start()


def openai_client(url):
    import openai

    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def series(text: str, name: str, tier: str) -> float:
    """One ``name{tier="..."}`` sample of a Prometheus text page."""
    match = re.search(rf'^{name}{{tier="{tier}"}} (\S+)$', text, re.MULTILINE)
    assert match, f"{name}{{tier={tier!r}}} missing from /metrics"
    return float(match.group(1))


class Sampler(threading.Thread):
    """Reads ``hub.residency.usage()`` and the device report in a loop until stopped (what budgets must hold)."""

    def __init__(self, hub):
        super().__init__(daemon=True)
        self.hub, self.samples, self.done = hub, [], threading.Event()

    def run(self):
        while not self.done.is_set():
            usage = self.hub.residency.usage()
            device = {info.name for info in self.hub.resident()}
            self.samples.append((usage, device))
            self.done.wait(0.002)

    def stop(self):
        self.done.set()
        self.join()
        return self.samples


def test_churn_answers_equal_each_adapter_alone_under_budgets(tiny_base, many, closing):
    """Nine adapters through three device slots (and a byte budget) from six concurrent clients, one adapter
    pinned the whole time, corrupt and foreign adapters in the mix; then /v1/adapters and /metrics."""
    import openai

    from adapterhub import AdapterHub

    registry, names, sizes = many
    device_budget = 2.5 * max(sizes.values())
    host_budget = sum(sorted(sizes.values())[-5:])  # about five of the nine: the host tier evicts too
    hub = AdapterHub(tiny_base, registry=registry, max_resident=3, memory_budget_mb=device_budget / 2**20,
                     host_budget_mb=host_budget / 2**20)
    closing(hub)
    pinned = hub.residency.pin(names[0])  # held by "a running call" for the whole test
    rng = random.Random(0)
    plan = [(rng.choice(names[1:] + ["broken", "foreign"]), rng.choice(PROMPTS)) for _ in range(36)]
    srv = serve(hub)
    sampler = Sampler(hub)
    sampler.start()
    client = openai_client(srv.url)

    def ask(job):
        model, prompt = job
        try:
            answer = client.completions.create(model=model, prompt=prompt, max_tokens=6, temperature=0)
            return answer.choices[0].text.strip()
        except openai.APIStatusError as error:
            return error

    try:
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(ask, plan))
        samples = sampler.stop()
        listing = httpx.get(srv.url + "/v1/adapters").json()
        metrics = httpx.get(srv.url + "/metrics").text
    finally:
        sampler.done.set()
        srv.stop()
        hub.residency.unpin(pinned)

    with AdapterHub(tiny_base, registry=registry) as alone:
        for (model, prompt), answer in zip(plan, answers):
            if model == "broken":
                assert isinstance(answer, openai.InternalServerError) and "sha256" in str(answer), answer
            elif model == "foreign":
                assert isinstance(answer, openai.BadRequestError) and "made for base" in str(answer), answer
            else:
                assert answer == alone.generate(prompt, domain=model, max_new_tokens=6, chat=False), model

    assert len(samples) > 10
    for usage, device in samples:
        assert usage["device"]["adapters"] <= 3 and usage["device"]["bytes"] <= device_budget
        assert usage["host"]["bytes"] <= host_budget
        assert names[0] in device  # pinned: never evicted
    counters = hub.residency.counters
    assert counters.evictions["device"] >= 3 and counters.evictions["host"] >= 1  # there was churn in both tiers
    assert counters.hits["host"] >= 1  # reloads of evicted adapters came from RAM

    rows = listing["data"]
    assert {(row["name"], row["tier"], row["bytes"]) for row in rows} == \
        {(info.name, info.tier, info.bytes) for info in hub.resident(tier="all")}
    assert {row["name"]: row["bytes"] for row in rows if row["tier"] == "device"}.items() <= sizes.items()
    assert next(row for row in rows if row["name"] == names[0])["pins"] == 1  # the test's own pin, still held
    for tier in ("device", "host"):
        held = [row for row in rows if row["tier"] == tier]
        assert series(metrics, "adapterhub_tier_adapters", tier) == len(held) == listing["tiers"][tier]["adapters"]
        assert series(metrics, "adapterhub_tier_bytes", tier) == sum(row["bytes"] for row in held)
        loads = series(metrics, "adapterhub_tier_loads_total", tier)
        assert loads - series(metrics, "adapterhub_tier_evictions_total", tier) == len(held)
    # every request (and the test's pin) looked its adapter up in the device tier once
    lookups = series(metrics, "adapterhub_tier_hits_total", "device") + \
        series(metrics, "adapterhub_tier_misses_total", "device")
    assert lookups == len(plan) + 1
    served = sum(1 for model, _ in plan if model not in ("broken", "foreign"))
    loaded_from = sum(float(n) for n in re.findall(r'^adapterhub_adapter_load_seconds_count\{tier="\w+"\} (\S+)$',
                                                   metrics, re.MULTILINE))
    assert loaded_from == series(metrics, "adapterhub_tier_loads_total", "device") <= served + 1


def test_a_slow_load_does_not_stall_the_running_batch(tiny_base, many, monkeypatch, closing):
    """While one request's adapter is still being read (held mid-read here), a request for a resident adapter
    starts, decodes every token and finishes; then the slow one joins and answers as it would alone."""
    from adapterhub import AdapterHub
    from adapterhub.runtime import sources

    registry, names, _ = many
    hub = AdapterHub(tiny_base, registry=registry, max_resident=2, host_budget_mb=64)
    closing(hub)
    hub.load(names[1])
    reading, release = threading.Event(), threading.Event()
    fetch = sources.fetch

    def held_fetch(source, **kwargs):
        if source.startswith(names[2] + "@"):
            reading.set()
            assert release.wait(60)
        return fetch(source, **kwargs)

    monkeypatch.setattr(sources, "fetch", held_fetch)
    srv = serve(hub)
    client = openai_client(srv.url)
    try:
        with ThreadPoolExecutor(2) as pool:
            slow = pool.submit(client.completions.create, model=names[2], prompt=PROMPTS[0], max_tokens=6,
                               temperature=0)
            assert reading.wait(60)
            fast = client.completions.create(model=names[1], prompt=PROMPTS[1], max_tokens=12, temperature=0)
            assert not slow.done()  # its load is still held: the other request did not wait for it
            release.set()
            slow_text = slow.result().choices[0].text.strip()
    finally:
        release.set()
        srv.stop()
    with AdapterHub(tiny_base, registry=registry) as alone:
        assert fast.choices[0].text.strip() == alone.generate(PROMPTS[1], domain=names[1], max_new_tokens=12, chat=False)
        assert fast.usage.completion_tokens == 12
        assert slow_text == alone.generate(PROMPTS[0], domain=names[2], max_new_tokens=6, chat=False)


def test_a_host_tier_hit_skips_the_disk_read(tiny_base, many):
    """An evicted adapter comes back from the host tier: counted as a host hit, no new host load (no read,
    verify or deserialise), and it answers exactly as before; an unload forgets the host copy too."""
    from adapterhub import AdapterHub

    registry, names, sizes = many
    with AdapterHub(tiny_base, registry=registry, max_resident=1, host_budget_mb=16) as hub:
        counters = hub.residency.counters
        first = hub.generate(PROMPTS[0], domain=names[3], max_new_tokens=5, chat=False)
        hub.generate(PROMPTS[0], domain=names[4], max_new_tokens=5, chat=False)  # evicts names[3] from its slot
        assert [info.name for info in hub.resident()] == [names[4]]
        assert {info.name for info in hub.resident(tier="host")} == {names[3], names[4]}
        reads, host_hits = counters.loads["host"], counters.hits["host"]
        again = hub.generate(PROMPTS[0], domain=names[3], max_new_tokens=5, chat=False)
        assert again == first
        assert counters.loads["host"] == reads and counters.hits["host"] == host_hits + 1
        assert counters.histogram("host")[0][-1] == 1  # one device load came from the host tier
        info = next(info for info in hub.resident(tier="host") if info.name == names[3])
        assert info.hits == 1 and info.bytes > 0 and info.pins == 0
        assert hub.unload(names[3]) and names[3] not in {i.name for i in hub.resident(tier="all")}


def test_host_budget_evicts_least_recently_used_and_skips_what_cannot_fit(tiny_base, many):
    from adapterhub import AdapterHub
    from adapterhub.errors import ConfigError

    registry, names, sizes = many
    small = [name for name in names if sizes[name] == min(sizes.values())]
    with AdapterHub(tiny_base, registry=registry, host_budget_mb=1.5 * sizes[small[0]] / 2**20) as hub:
        for name in small[:3]:
            hub.load(name)
        assert [info.name for info in hub.resident(tier="host")] == [small[2]]  # room for one
        big = max(names, key=sizes.get)
        hub.load(big)  # larger than the whole budget: served, never held in host RAM
        assert big not in {info.name for info in hub.resident(tier="host")}
        assert hub.residency.usage()["host"]["bytes"] <= 1.5 * sizes[small[0]]
    with AdapterHub(tiny_base, registry=registry) as hub:  # no host tier by default in Python
        hub.load(names[0])
        assert hub.resident(tier="host") == [] and hub.residency.counters.hits["host"] == 0
    with pytest.raises(ConfigError, match="host_budget_mb"):
        AdapterHub(tiny_base, registry=registry, host_budget_mb=-1)


def test_hf_pulls_go_through_the_tiers_and_need_a_key_allowed_to_pull(tiny_base, many, hub_env, tmp_path, closing):
    """``hf://`` under --allow-hf: a key must be allowed to pull (admin, or an ``hf://ORG/*`` allow entry); the
    pull lands in the device and host tiers like any load and answers as the adapter alone."""
    from adapterhub import AdapterHub, Registry
    from adapterhub.hf import push
    from adapterhub.serve.auth import KeyStore

    registry, names, _ = many
    seed = Registry(tmp_path / "seed")
    seed.add(registry.get(names[5]).path, "pulled", base=tiny_base)
    push("pulled", "alice/pulled", registry=seed)
    keys = KeyStore(tmp_path / "keys.sqlite")
    everything = keys.create("everything")  # every registered adapter, but not the Hub
    puller = keys.create("puller", allow=["hf://alice/*"])
    hub = AdapterHub(tiny_base, registry=Registry(tmp_path / "served"), max_resident=2, host_budget_mb=16)
    closing(hub)
    srv = serve(hub, auth=True, allow_hf=True, keys_path=str(tmp_path / "keys.sqlite"))
    body = {"model": "hf://alice/pulled", "prompt": PROMPTS[2], "max_tokens": 6, "temperature": 0}
    try:
        refused = httpx.post(srv.url + "/v1/completions", json=body, headers={"Authorization": f"Bearer {everything}"})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "hf_pull_not_allowed"
        other = httpx.post(srv.url + "/v1/completions", json={**body, "model": "hf://bob/x"},
                           headers={"Authorization": f"Bearer {puller}"})
        assert other.status_code == 403 and other.json()["error"]["code"] == "hf_pull_not_allowed"
        answer = httpx.post(srv.url + "/v1/completions", json=body, headers={"Authorization": f"Bearer {puller}"},
                            timeout=120)
        assert answer.status_code == 200, answer.text
        tiers = {(info.name, info.tier) for info in hub.resident(tier="all")}
        assert {("hf://alice/pulled", "device"), ("hf://alice/pulled", "host")} <= tiers
        listing = httpx.get(srv.url + "/v1/adapters", headers={"Authorization": f"Bearer {puller}"})
        assert listing.status_code == 403  # admin keys only
    finally:
        srv.stop()
    with AdapterHub(tiny_base, registry=registry) as alone:
        expected = alone.generate(PROMPTS[2], domain=names[5], max_new_tokens=6, chat=False)
    assert answer.json()["choices"][0]["text"].strip() == expected


def test_the_server_cli_bounds_residency_by_default():
    from adapterhub.cli import build_parser

    args = build_parser().parse_args(["serve"])
    assert args.max_resident >= 1 and args.host_budget_mb > 0
    args = build_parser().parse_args(["serve", "--max-resident", "8", "--memory-budget-mb", "64",
                                      "--host-budget-mb", "0"])
    assert (args.max_resident, args.memory_budget_mb, args.host_budget_mb) == (8, 64.0, 0.0)
