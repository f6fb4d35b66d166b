"""A router travels through the Hub like an adapter: pushed with its three adapters, pulled into a fresh registry
and used there without retraining (same decisions), since its pins (name@version, weights' sha256) still hold."""

from __future__ import annotations

from adapterhub.registry import Registry
from adapterhub.runtime import AdapterHub
from tests.helpers.routing import mixed_texts


def test_a_router_is_pushed_pulled_and_routes_the_same(hub_env, tiny_base, routing_registry, routing_router,
                                                       tmp_path):
    from adapterhub.hf import pull, push

    for name in ("finance", "medical", "legal", "domains"):
        push(f"{name}@1", f"alice/{name}", registry=routing_registry)
    fresh = Registry(tmp_path / "elsewhere")
    for name in ("finance", "medical", "legal", "domains"):
        pull(f"alice/{name}", registry=fresh, name=name)
    assert fresh.get("domains").method == "router"
    texts, _ = mixed_texts(seed=800)
    with AdapterHub(tiny_base, registry=routing_registry) as here, AdapterHub(tiny_base, registry=fresh) as there:
        assert [d.to_dict() for d in here.route(texts, router="domains")] == \
            [d.to_dict() for d in there.route(texts, router="domains")]
        there.use_router("domains")
        assert there.predict(texts[:3], domain="auto") == here.predict(
            texts[:3], domains=[d.choice for d in here.route(texts[:3], router="domains")])
