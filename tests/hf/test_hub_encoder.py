"""Encoder adapters through the registry and the Hub (local Hub server): card, pull, serve, refusals."""

from __future__ import annotations

import pytest
import torch
from tests.helpers.hub import front_matter

from adapterhub import errors, load_base
from adapterhub.base.tiny import make_tiny_bert
from adapterhub.hf import pull, push
from adapterhub.registry import Registry
from adapterhub.runtime import AdapterHub
from adapterhub.runtime.testing import load_peft_encoder, make_random_encoder_adapters

CASES = {"SEQ_CLS": ("sequence_classification", "text-classification", ("positive", "negative", "neutral"), 3),
         "TOKEN_CLS": ("token_classification", "token-classification", ("ORG", "MONEY"), 5)}


@pytest.fixture(scope="module")
def bert_base(tmp_path_factory):
    return load_base(str(make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))), device="cpu")


@pytest.mark.parametrize("task_type", list(CASES))
def test_push_pull_and_serve_an_encoder_adapter(hub_env, bert_base, tmp_path, task_type):
    task, pipeline, labels, outputs = CASES[task_type]
    [path] = make_random_encoder_adapters(bert_base, tmp_path / "made", task_type=task_type, labels=labels)
    registry = Registry(tmp_path / "registry")
    record = registry.add(path, "enc", domain="finance", base=bert_base)
    assert record.task.type == task and record.task.labels == labels
    push("enc", "alice/enc-lora", registry=registry)
    head = hub_env.head("alice/enc-lora")
    metadata = front_matter(head.files["README.md"])
    assert metadata["pipeline_tag"] == pipeline and metadata["library_name"] == "peft"
    body = head.files["README.md"].decode()
    auto = "AutoModelForTokenClassification" if task_type == "TOKEN_CLS" else "AutoModelForSequenceClassification"
    assert auto in body and f"num_labels={outputs}" in body

    fresh = Registry(tmp_path / "fresh")
    pulled = pull("alice/enc-lora", registry=fresh, base=bert_base)
    assert pulled.task.type == task and pulled.task.labels == labels
    texts = ["Apple sold $4.2 billion of bonds.", "Shares rose."]
    with AdapterHub(bert_base, registry=fresh) as served:
        ours = served.head_logits(texts, domain=pulled.name)
    reference = load_peft_encoder(bert_base, pulled.path, task_type=task_type, num_labels=outputs)
    with torch.no_grad():
        expected = reference(**bert_base.tokenizer(texts, padding=True, return_tensors="pt")).logits
    for row in range(2):
        torch.testing.assert_close(ours[row], expected[row], atol=1e-4, rtol=0)


def test_pulling_an_encoder_adapter_onto_a_decoder_is_refused(hub_env, bert_base, tiny_base, tmp_path):
    [path] = make_random_encoder_adapters(bert_base, tmp_path / "made")
    registry = Registry(tmp_path / "registry")
    registry.add(path, "enc", base=bert_base)
    push("enc", "alice/enc-lora", registry=registry)
    with pytest.raises(errors.HubIncompatibleBaseError, match="encoder adapter .* decoder"):
        pull("alice/enc-lora", registry=Registry(tmp_path / "fresh"), base=tiny_base)


def test_registry_refuses_an_encoder_adapter_for_a_decoder_base(bert_base, tiny_base, tmp_path):
    [path] = make_random_encoder_adapters(bert_base, tmp_path / "made", task_type="TOKEN_CLS", labels=("ORG",))
    with pytest.raises(errors.IncompatibleBaseError, match="decoder"):
        Registry(tmp_path / "registry").add(path, "enc", base=tiny_base)
