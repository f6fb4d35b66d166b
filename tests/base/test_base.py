"""Base loading: resolution, freezing, quantisation, fingerprints, bad inputs."""

from __future__ import annotations

import shutil

import pytest
import torch

from adapterhub import load_base
from adapterhub.base import fingerprint
from adapterhub.errors import (AdapterHubError, BaseNotFoundError, QuantizationError,
                               UnknownBaseError)


def test_tiny_base_is_frozen_and_in_eval_mode(tiny_base):
    assert not tiny_base.model.training
    assert all(not p.requires_grad for p in tiny_base.model.parameters())
    assert tiny_base.spec.source == "local"
    assert tiny_base.spec.num_layers == 2 and tiny_base.spec.hidden_size == 64
    assert tiny_base.spec.num_parameters == sum(p.numel() for p in tiny_base.model.parameters())


def test_linear_shapes_cover_every_projection(tiny_base):
    shapes = tiny_base.linear_shapes
    assert shapes["model.layers.0.self_attn.q_proj"] == (64, 64)
    assert shapes["model.layers.1.mlp.down_proj"] == (128, 64)
    assert shapes["model.layers.0.self_attn.k_proj"] == (64, 32)  # 2 kv heads of 16


@pytest.mark.parametrize("quantize", ["nf4", "fp4", "int8"])
def test_quantized_load_keeps_fingerprint_and_shapes(tiny_llama_dir, tiny_base, quantize):
    base = load_base(str(tiny_llama_dir), quantize=quantize, device="cpu")
    assert base.fingerprint == tiny_base.fingerprint
    assert base.spec.quantize == quantize
    assert base.linear_shapes == tiny_base.linear_shapes
    assert all(not p.requires_grad for p in base.model.parameters())
    with torch.inference_mode():
        logits = base.model(torch.tensor([[1, 5, 9]])).logits
    assert logits.shape == (1, 3, base.spec.vocab_size) and torch.isfinite(logits).all()


def test_fingerprint_differs_for_other_weights(tiny_llama_dir, other_tiny_llama_dir):
    assert fingerprint(tiny_llama_dir) != fingerprint(other_tiny_llama_dir)
    assert fingerprint(tiny_llama_dir).startswith("llama-2L-64h-")


def test_fingerprint_is_stable_across_copies(tiny_llama_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_llama_dir, copy)
    assert fingerprint(copy) == fingerprint(tiny_llama_dir)


@pytest.mark.parametrize("name, error", [
    ("no-such-alias", UnknownBaseError),
    ("./does/not/exist", BaseNotFoundError),
    ("/definitely/missing/model", BaseNotFoundError),
])
def test_bad_model_names(name, error):
    with pytest.raises(error) as caught:
        load_base(name)
    assert name in str(caught.value)


def test_directory_without_safetensors_is_refused(tmp_path, tiny_llama_dir):
    shutil.copy(tiny_llama_dir / "config.json", tmp_path / "config.json")
    torch.save({}, tmp_path / "pytorch_model.bin")
    with pytest.raises(BaseNotFoundError, match="safetensors"):
        load_base(str(tmp_path))


@pytest.mark.parametrize("kwargs", [{"quantize": "int4"}, {"dtype": "float64"}, {"device": "tpu"}])
def test_bad_quantization_arguments(tiny_llama_dir, kwargs):
    with pytest.raises(QuantizationError) as caught:
        load_base(str(tiny_llama_dir), **kwargs)
    assert str(next(iter(kwargs.values()))) in str(caught.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_requested_without_cuda(tiny_llama_dir):
    with pytest.raises(QuantizationError, match="CUDA is not available"):
        load_base(str(tiny_llama_dir), device="cuda")


def test_errors_share_one_root():
    assert issubclass(UnknownBaseError, AdapterHubError) and issubclass(UnknownBaseError, LookupError)
    assert issubclass(BaseNotFoundError, FileNotFoundError)


def test_unreachable_hub_id_names_the_alternatives(monkeypatch):
    from adapterhub.errors import HubConnectionError

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(HubConnectionError) as caught:
        load_base("acme/no-such-base")
    assert "acme/no-such-base" in str(caught.value) and "local model directory" in str(caught.value)
