"""Routers on the tiny llama: a registry entry with lineage, deterministic decisions, routed rows equal named rows,
the mix fallback equals the explicit mix, restrictions hold, stale routers refuse, bad input is one clear error."""

from __future__ import annotations

import pytest

from adapterhub.errors import (IncompatibleBaseError, InvalidAdapterError, RoutingError, StaleRouterError)
from adapterhub.runtime import AdapterHub
from adapterhub.runtime.routers import Router
from adapterhub.runtime.routers.build import build_router
from adapterhub.runtime.testing import make_random_adapters
from tests.helpers.routing import mixed_texts

ATOL = 1e-4


@pytest.fixture
def registry(routing_registry):
    return routing_registry


@pytest.fixture
def router(routing_router):
    return routing_router


@pytest.fixture
def hub(tiny_base, registry, router):
    with AdapterHub(tiny_base, registry=registry) as hub:
        hub.use_router("domains")
        yield hub


def test_the_router_is_a_small_registry_entry_pinned_to_exact_refs(router, registry):
    source = router.manifest["source"]
    assert (router.ref, router.method, source["kind"]) == ("domains@1", "router", "router")
    assert [a["ref"] for a in source["adapters"]] == ["finance@1", "medical@1", "legal@1"]
    assert source["adapters"][0]["weights_sha256"] == \
        registry.get("finance@1").manifest["files"]["adapter_model.safetensors"]["sha256"]
    assert all(len(entry["files"]) == 2 and len(entry["files"][0]["sha256"]) == 64 for entry in source["data"])
    assert (router.path / "adapter_model.safetensors").stat().st_size < 1_000_000
    table = router.manifest["metrics"]["router"]["candidates"]
    assert {row["head"] for row in table} == {"prototype", "linear"}
    assert registry.verify("domains") == []


def test_decisions_are_deterministic_and_right_on_clear_texts(hub):
    texts, truth = mixed_texts(seed=100)
    first = hub.route(texts)
    assert [d.to_dict() for d in first] == [d.to_dict() for d in hub.route(texts)]
    alone = [hub.route(text)[0] for text in texts]  # a text's decision does not depend on its batch
    assert [d.adapter for d in alone] == [d.adapter for d in first]
    assert [d.adapter for d in first] == truth
    assert all(abs(a.probability - b.probability) < 1e-5 for a, b in zip(alone, first))
    assert all(d.decision == "adapter" and d.choice == f"{d.adapter}@1" for d in first)


def test_routed_rows_equal_named_rows_and_share_one_call(hub):
    texts, _ = mixed_texts(seed=200)
    chosen = [d.choice for d in hub.route(texts)]  # what the router picks (the tiny llama may pick wrong: no matter)
    assert all(isinstance(choice, str) for choice in chosen)
    domains = ["auto" if i % 2 else choice for i, choice in enumerate(chosen)]  # auto rows beside named rows
    routed = hub.label_scores(texts, domains=domains)
    named = hub.label_scores(texts, domains=chosen)
    for a, b in zip(routed, named):
        assert list(a) == list(b) and all(abs(a[k] - b[k]) < ATOL for k in a)
    assert hub.predict(texts, domain="auto") == hub.predict(texts, domains=chosen)
    assert hub.generate(texts[:2], domain="auto", max_new_tokens=3) == \
        hub.generate(texts[:2], domains=chosen[:2], max_new_tokens=3)


def test_the_mix_fallback_equals_the_explicit_weighted_mix(hub, router):
    doubtful = Router(router.ref, {**hub.router.config, "min_probability": 1.01}, hub.router.tensors)
    hub.use_router(doubtful, fallback="mix")
    texts, _ = mixed_texts(seed=300)
    decisions = hub.route(texts)
    assert all(d.decision == "mix" and abs(sum(d.choice.values()) - 1) < 1e-6 for d in decisions)
    assert all(set(d.choice) == {f"{d.adapter}@1", f"{d.runner_up}@1"} for d in decisions)
    routed = hub.label_scores(texts, domain="auto")
    mixed = hub.label_scores(texts, domains=[d.choice for d in decisions])
    for a, b in zip(routed, mixed):
        assert all(abs(a[k] - b[k]) < ATOL for k in a)
    hub.use_router(doubtful, fallback="base")
    assert all(d.decision == "base" and d.choice is None for d in hub.route(texts))
    hub.use_router(doubtful, fallback="error")
    with pytest.raises(RoutingError, match="not confident"):
        hub.route(texts)


def test_a_restriction_never_yields_another_adapter(hub):
    texts, _ = mixed_texts(seed=400)
    for decision in hub.route(texts, among=["finance"]):
        assert decision.choice in ("finance@1", None)
    restricted = hub.route(texts, among=["finance", "legal"])
    assert all(d.adapter in ("finance", "legal") and d.runner_up in ("finance", "legal") for d in restricted)
    assert hub.predict(texts[:3], domain="auto:finance") == hub.predict(texts[:3], domain="finance")
    with pytest.raises(RoutingError, match="cannot choose sports"):
        hub.route(texts, among=["sports"])


def test_bad_input_is_one_clear_error(hub, registry, tiny_base, other_tiny_llama_dir, tmp_path):
    with pytest.raises(RoutingError, match="text 1 is empty"):
        hub.route(["shares rose", "  "])
    with pytest.raises(RoutingError, match="fallback='maybe'"):
        hub.route(["shares rose"], fallback="maybe")
    with pytest.raises(RoutingError, match="two or more adapters"):
        build_router("one", adapters=["finance"], registry=registry, base=tiny_base)
    with pytest.raises(RoutingError, match="not a router"):
        hub.use_router("finance")
    with pytest.raises(InvalidAdapterError, match="is a router, not an adapter"):
        hub.load("domains")
    with AdapterHub(tiny_base, registry=registry) as bare:
        with pytest.raises(RoutingError, match="needs a router"):
            bare.predict("shares rose", domain="auto")
    from adapterhub import load_base

    other = load_base(str(other_tiny_llama_dir), device="cpu")
    folder = make_random_adapters(other, tmp_path, r=4)[0]
    registry.add(folder, "elsewhere", base=other, recipe={"data": {"train": {"path": str(folder)}}})
    with pytest.raises(IncompatibleBaseError, match="different bases"):
        build_router("mixed-bases", adapters=["finance", "elsewhere"], registry=registry, base=tiny_base)
    assert [r.name for r in registry.list() if r.name in ("one", "mixed-bases")] == []


def test_the_gate_reads_embeddings_beside_the_block_and_old_routers_still_load(router, registry):
    """Format 2 (written now): the gate's tensors span the token embeddings' mean and the block's; a format-1
    router (the plain distance over the block, ``whiten``) still passes the file check and decides."""
    import json

    import torch
    from safetensors.torch import load_file

    from adapterhub.registry.routers import check_router_files
    from adapterhub.runtime.routers.fit import _one_sigma_below

    config = json.loads((router.path / "adapter_config.json").read_text())
    tensors = load_file(str(router.path / "adapter_model.safetensors"))
    hidden = tensors["mean"].shape[0]
    assert (config["adapterhub_router"], config["gate"]) == (2, "embedding+block")
    assert tensors["gate_mean"].shape == (2 * hidden,) and tensors["within_basis"].shape[1] == 2 * hidden
    shapes = {key: tuple(value.shape) for key, value in tensors.items()}
    with pytest.raises(InvalidAdapterError, match="within_basis"):
        check_router_files(config, {k: v for k, v in shapes.items() if k != "within_basis"}, where="x")
    old = {key: tensors[key] for key in ("mean", "scale", "prototypes", "weight", "bias") if key in tensors}
    old |= {"centres": torch.zeros(3, hidden), "whiten": torch.eye(hidden, dtype=torch.float16)}
    old_config = {**{k: v for k, v in config.items() if k != "gate"}, "adapterhub_router": 1, "max_distance": 1e9,
                  "min_probability": 0.0}
    check_router_files(old_config, {key: tuple(value.shape) for key, value in old.items()}, where="old")
    block = torch.randn(2, hidden)
    decided = Router("domains@1", old_config, old).decide(block)
    assert [d.decision for d in decided] == ["adapter", "adapter"]
    new = Router("domains@1", config, tensors).probabilities(torch.cat([torch.randn(2, hidden), block], -1), [0, 1, 2])
    assert [["finance", "medical", "legal"][int(i)] for i in new[0].argmax(-1)] == [d.adapter for d in decided]
    assert _one_sigma_below(1.0, 64) == 1.0 and _one_sigma_below(0.9, 100) == pytest.approx(0.87)


def test_predict_names_the_text_the_router_left_to_the_bare_base(hub):
    from adapterhub.errors import TaskMismatchError

    strict = Router(hub.router.ref, {**hub.router.config, "max_distance": -1e9}, hub.router.tensors)
    hub.use_router(strict, fallback="base")
    texts, _ = mixed_texts(seed=900)
    assert {d.decision for d in hub.route(texts)} == {"base"}
    with pytest.raises(TaskMismatchError, match="left text 0 to the bare base .*distance"):
        hub.predict(texts, domain="auto")
    assert hub.generate(texts[0], domain="auto", max_new_tokens=2, chat=False) == \
        hub.generate(texts[0], domain=None, max_new_tokens=2, chat=False)  # generation: the base answers


# last in the file: it removes legal@1 from the module's registry
def test_a_stale_router_refuses_until_rebuilt(tiny_base, registry, router, tmp_path):
    with AdapterHub(tiny_base, registry=registry) as hub:
        hub.use_router("domains")
        folder = make_random_adapters(tiny_base, tmp_path, prefix="medical-v2", seed=9, r=4)[0]
        registry.add(folder, "medical", task=registry.get("medical").task, base=tiny_base,
                     recipe=registry.get("medical").manifest["recipe"])
        with pytest.raises(StaleRouterError, match="medical is now medical@2"):
            hub.predict("fever cough", domain="auto")
        registry.remove("medical@2")
        assert hub.route("fever cough pain")[0].adapter == "medical"
        registry.remove("legal@1")
        with pytest.raises(StaleRouterError, match="legal@1, which is no longer in the registry"):
            hub.use_router("domains")
