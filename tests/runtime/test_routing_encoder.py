"""A router on an encoder base (the tiny BERT): built from the adapters' recorded data like a decoder's (BERT's
layers and word embeddings are found the same way), and ``classify(domain="auto")`` equals naming the chosen
adapter per text."""

from __future__ import annotations

import json

import pytest

from adapterhub import load_base
from adapterhub.base.tiny import make_tiny_bert
from adapterhub.registry import Registry
from adapterhub.runtime import AdapterHub
from adapterhub.runtime.routers import build_router
from adapterhub.runtime.testing import make_random_encoder_adapters
from tests.helpers.routing import WORDS, domain_texts, mixed_texts


@pytest.fixture(scope="module")
def bert_hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("encoder-routing")
    base = load_base(str(make_tiny_bert(root / "bert")), device="cpu")
    registry = Registry(root / "registry")
    for index, domain in enumerate(WORDS):
        files = {}
        for split, count in (("train", 24), ("validation", 9)):
            path = root / f"{domain}-{split}.jsonl"
            path.write_text("".join(json.dumps({"text": text, "label": "a"}) + "\n"
                                    for text in domain_texts(domain, count, seed=10 * index + len(split))))
            files[split] = {"path": str(path)}
        folder = make_random_encoder_adapters(base, root, prefix=domain, seed=index, r=4, labels=("a", "b"))[0]
        registry.add(folder, domain, domain=domain, base=base, recipe={"data": files})
    build_router("domains", adapters=list(WORDS), registry=registry, base=base)
    with AdapterHub(base, registry=registry) as hub:
        hub.use_router("domains")
        yield hub


def test_an_encoder_router_routes_classify_like_naming_the_adapter(bert_hub):
    texts, truth = mixed_texts(seed=1000)
    decisions = bert_hub.route(texts)
    assert [d.adapter for d in decisions] == truth
    routed = [i for i, d in enumerate(decisions) if d.decision == "adapter"]
    assert len(routed) >= 6
    auto = bert_hub.classify([texts[i] for i in routed], domain="auto")
    named = bert_hub.classify([texts[i] for i in routed], domains=[decisions[i].choice for i in routed])
    assert auto == named
