"""The service over an encoder base: /v1/classify answers encoder classifiers like ``hub.classify``,
/v1/tag answers taggers like ``hub.tag``, and a task mix-up is one clear 400."""

from __future__ import annotations

import httpx
import pytest

from adapterhub import load_base
from adapterhub.base.tiny import make_tiny_bert

TEXTS = ["Aspirin was started for type 2 diabetes.", "Apple reported revenue of $4.2 billion, up 8%."]


@pytest.fixture(scope="module")
def encoder_server(tmp_path_factory):
    from adapterhub.runtime import AdapterHub
    from adapterhub.runtime.testing import make_random_encoder_adapters
    from adapterhub.serve import ServeOptions, ServerThread, build_app

    base = load_base(str(make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))), device="cpu")
    root = tmp_path_factory.mktemp("encoder-adapters")
    hub = AdapterHub(base)
    hub.load(make_random_encoder_adapters(base, root, task_type="SEQ_CLS", prefix="sentiment")[0], name="sentiment")
    hub.load(make_random_encoder_adapters(base, root, task_type="TOKEN_CLS", labels=("DRUG", "DISEASE"),
                                          prefix="ner")[0], name="ner")
    server = ServerThread(build_app(hub, ServeOptions(base_name="tiny-bert"))).start()
    yield hub, server
    server.stop()
    hub.close()


def test_classify_and_tag_answer_like_the_hub(encoder_server):
    hub, server = encoder_server
    with httpx.Client(base_url=server.url, timeout=60) as http:
        classified = http.post("/v1/classify", json={"model": "sentiment", "input": TEXTS})
        tagged = http.post("/v1/tag", json={"model": "ner", "input": TEXTS})
        wrong = http.post("/v1/tag", json={"model": "sentiment", "input": TEXTS})
        also_wrong = http.post("/v1/classify", json={"model": "ner", "input": TEXTS})
    assert classified.status_code == 200, classified.text
    expected = hub.classify(TEXTS, domain="sentiment")
    for row, answer in zip(classified.json()["data"], expected):
        assert row["label"] == answer["label"] and row["labels"] == list(answer["scores"])
        assert row["probs"] == pytest.approx(list(answer["scores"].values()), abs=1e-6)
    assert tagged.status_code == 200, tagged.text
    assert [row["entities"] for row in tagged.json()["data"]] == hub.tag(TEXTS, domain="ner")
    for response in (wrong, also_wrong):
        assert response.status_code == 400 and response.json()["error"]["code"] == "task_mismatch"


def test_generation_routes_say_an_encoder_does_not_generate(encoder_server):
    _, server = encoder_server
    with httpx.Client(base_url=server.url, timeout=60) as http:
        answer = http.post("/v1/completions", json={"model": "sentiment", "prompt": "Hello", "max_tokens": 4})
    assert answer.status_code == 400 and "does not generate text" in answer.json()["error"]["message"]
