"""``/metrics`` stays bounded with many adapters: only the top-K adapters by traffic get their own ``adapter``
series, the rest count under ``other`` (real server, tiny llama, real openai client)."""

from __future__ import annotations

import re

import httpx
import pytest

from adapterhub.errors import ConfigError
from adapterhub.serve.adapter_labels import OTHER, AdapterLabels


def test_the_first_k_take_labels_and_a_busier_adapter_takes_the_weakest_ones():
    demoted = []
    labels = AdapterLabels(top_k=2, on_demote=demoted.append)
    assert [labels.count(name) for name in ("a", "b", "c")] == ["a", "b", OTHER]
    assert labels.label("base") == "base" and labels.label("-") == "-"  # never counted against K
    assert [labels.count("c") for _ in range(2)] == [OTHER, "c"]  # 3 requests > 2 x the weakest's 1
    assert demoted in (["a"], ["b"]) and labels.labelled() == {"c", {"a": "b", "b": "a"}[demoted[0]]}
    assert labels.label(demoted[0]) == OTHER


def test_uniform_traffic_does_not_trade_labels():
    demoted = []
    labels = AdapterLabels(top_k=3, on_demote=demoted.append)
    for _ in range(200):
        for name in "abcdefgh":
            labels.count(name)
    assert demoted == [] and len(labels.labelled()) == 3


def test_tallies_stay_bounded_and_k_zero_labels_nothing():
    labels = AdapterLabels(top_k=2, max_tracked=16)
    for index in range(1000):
        labels.count(f"n{index}")
    assert labels.labelled() == {"n0", "n1"}  # seen once each: no later name outgrew them
    assert AdapterLabels(top_k=0).count("a") == OTHER
    with pytest.raises(ConfigError, match="top_k"):
        AdapterLabels(top_k=-1)


def samples(text: str, name: str) -> dict[str, float]:
    """``adapter`` label value -> summed value of every ``name`` sample carrying it."""
    totals: dict[str, float] = {}
    for labels, value in re.findall(rf"^{name}\{{([^}}]*)\}} (\S+)$", text, re.MULTILINE):
        adapter = re.search(r'adapter="([^"]*)"', labels)
        if adapter:
            totals[adapter.group(1)] = totals.get(adapter.group(1), 0.0) + float(value)
    return totals


def test_metrics_carry_the_busiest_adapters_and_other(tiny_base, tmp_path):
    import openai

    from adapterhub import AdapterHub, Registry
    from adapterhub.runtime.testing import make_random_adapters
    from adapterhub.serve import ServeOptions, ServerThread, build_app

    registry = Registry(tmp_path / "registry")
    for index, folder in enumerate(make_random_adapters(tiny_base, tmp_path / "dirs", count=4, r=2, prefix="m")):
        registry.add(folder, f"m{index}", base=tiny_base)
    hub = AdapterHub(tiny_base, registry=registry, max_resident=2)
    app = build_app(hub, ServeOptions(max_rows=4, max_new_tokens=8, metrics_top_k=2, base_name="tiny"))
    plan = ["m2", "m3"] + ["m0"] * 6 + ["m1"] * 4  # m2, m3 take the labels first; m0 then m1 outgrow them
    try:
        with ServerThread(app) as srv:
            client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)
            generated = sum(client.completions.create(model=model, prompt="The quarterly revenue", max_tokens=3,
                                                      temperature=0).usage.completion_tokens for model in plan)
            text = httpx.get(srv.url + "/metrics").text
    finally:
        hub.close()  # its slots leave the layers every hub on the base shares

    requests = samples(text, "adapterhub_requests_total")
    # m0's and m1's first two went to other; m2 and m3 lost their labels, their counts moved to other
    assert requests == {"m0": 4.0, "m1": 2.0, OTHER: 6.0}
    tokens = samples(text, "adapterhub_generated_tokens_total")
    assert set(tokens) <= {"m0", "m1", OTHER} and sum(tokens.values()) == generated
    for family in ("adapterhub_request_seconds_count", "adapterhub_time_to_first_token_seconds_count",
                   "adapterhub_adapter_loads_total", "adapterhub_adapter_evictions_total"):
        assert set(samples(text, family)) <= {"m0", "m1", OTHER}, family
    assert sum(samples(text, "adapterhub_request_seconds_count").values()) == len(plan) - 2  # m2's, m3's dropped
