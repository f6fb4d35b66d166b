"""Loading reads each adapter once: registry weights are views into the bytes read (one private buffer), and
LoRA keeps its transposed weights in those same bytes; what it computes, and what the files hold, stay as before.
"""

from __future__ import annotations

import io
import json
import struct

import pytest
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import load_file, save

from adapterhub.registry import Registry
from adapterhub.registry.files import _read_writable, read_observed
from adapterhub.registry.manifest import WEIGHTS_FILE
from adapterhub.registry.safetensors_file import SafetensorsViews, safetensors_layout, safetensors_tensors
from adapterhub.runtime import AdapterHub
from adapterhub.methods.lora.serving import LoraMethod
from adapterhub.runtime.testing import make_random_adapters

LORAS = {  # name -> make_random_adapters options: every way LoRA weights are folded at load
    "plain": dict(r=4),
    "patterns": dict(r=2, lora_alpha=3, target_modules=["gate_proj", "up_proj", "down_proj"],
                     rank_pattern={"down_proj": 6}, alpha_pattern={"up_proj": 11}),
    "bias": dict(r=3, target_modules=["o_proj", "k_proj"], lora_bias=True),
    "rslora": dict(r=8, lora_alpha=5, use_rslora=True, target_modules=["k_proj", "o_proj", "down_proj"]),
    "dora": dict(r=4, use_dora=True, target_modules=["q_proj", "v_proj", "up_proj"]),
}


@pytest.fixture(scope="module")
def lora_dirs(tiny_base, tmp_path_factory):
    root = tmp_path_factory.mktemp("loras")
    return {name: make_random_adapters(tiny_base, root, prefix=name, seed=index, **options)[0]
            for index, (name, options) in enumerate(LORAS.items())}


def _slot_weights(hub: AdapterHub, name: str) -> dict[int, object]:
    slot = hub.residency.get(name).slot
    return {id(layer): layer.weights[slot] for layer in hub.residency.methods["lora"].slot_layers(slot)}


@pytest.mark.parametrize("name", list(LORAS))
def test_registry_loads_fold_lora_in_place_exactly_as_a_folder_load(tiny_base, lora_dirs, tmp_path, name):
    registry = Registry(tmp_path / "registry")
    registry.add(lora_dirs[name], name, base=tiny_base)
    weights_file = registry.get(name).path / WEIGHTS_FILE
    stored = weights_file.read_bytes()
    with AdapterHub(tiny_base, registry=registry) as hub:
        hub.load(name)  # registry: weights transposed in the buffer they were read into
        hub.load(lora_dirs[name], name="folder")  # folder: a new storage
        from_registry, from_folder = _slot_weights(hub, name), _slot_weights(hub, "folder")
        assert from_registry.keys() == from_folder.keys()
        for key, weights in from_registry.items():
            other = from_folder[key]
            assert weights.A.untyped_storage().nbytes() == len(stored)  # in place: the read buffer itself
            assert weights.A.is_contiguous() and weights.B.is_contiguous()
            for field in ("A", "B", "bias", "dora_gain"):
                mine, theirs = getattr(weights, field), getattr(other, field)
                assert (mine is None) == (theirs is None)
                if mine is not None:
                    assert mine.dtype == theirs.dtype and torch.equal(mine, theirs), field
        ids = torch.tensor([[1, 5, 9, 13, 2]])
        assert torch.equal(hub.logits(ids, domain=name), hub.logits(ids, domain="folder"))
    assert weights_file.read_bytes() == stored and registry.verify(name) == []  # the file is never written


def test_an_adapter_reloaded_after_eviction_is_read_afresh(tiny_base, lora_dirs, tmp_path):
    registry = Registry(tmp_path / "registry")
    for name in ("plain", "rslora"):
        registry.add(lora_dirs[name], name, base=tiny_base)
    ids = torch.tensor([[3, 4, 5, 6]])
    with AdapterHub(tiny_base, registry=registry, max_resident=1) as hub:
        first = hub.logits(ids, domain="plain")
        hub.load("rslora")  # evicts plain
        assert torch.equal(hub.logits(ids, domain="plain"), first)  # reloaded from the file, folded again


def test_float32_base_in_bfloat16_keeps_the_rounding(tiny_llama_dir, lora_dirs, tmp_path):
    from adapterhub import load_base

    base = load_base(str(tiny_llama_dir), device="cpu", dtype="bfloat16")
    registry = Registry(tmp_path / "registry")
    registry.add(lora_dirs["plain"], "plain", base=base)
    method = LoraMethod(base)
    loaded = registry.load("plain", base=base)
    expected = {}
    for key, tensor in load_file(str(lora_dirs["plain"] / WEIGHTS_FILE)).items():
        if ".lora_B." in key:
            tensor = tensor.float() * torch.tensor(loaded.config["lora_alpha"] / loaded.config["r"])
        expected[key] = tensor.to(torch.bfloat16)
    prepared = method.prepare(loaded.config, loaded.tensors)  # not in place: another dtype, a new storage
    for module_name, weights in prepared.layers.items():
        assert torch.equal(weights.A, expected[f"base_model.model.{module_name}.lora_A.weight"])
        assert torch.equal(weights.B, expected[f"base_model.model.{module_name}.lora_B.weight"])
        assert weights.A.dtype == torch.bfloat16 and weights.A.is_contiguous()


def _blob(tensors: dict[str, torch.Tensor], pad: int) -> bytes:
    """A safetensors file whose header is ``pad`` bytes longer than needed (so data starts unaligned)."""
    data = save(tensors)
    (length,) = struct.unpack("<Q", data[:8])
    header = data[8:8 + length] + b" " * pad
    return struct.pack("<Q", len(header)) + header + data[8 + length:]


@pytest.mark.parametrize("pad", [0, 1, 2, 3])
def test_views_equal_the_safetensors_loader(pad):
    generator = torch.Generator().manual_seed(0)
    tensors = {"a": torch.randn(3, 5, generator=generator), "b": torch.randn(7, generator=generator).to(torch.bfloat16),
               "c": torch.arange(6, dtype=torch.int64).view(2, 3), "d": torch.tensor(2.5), "e": torch.zeros(0, 4),
               "f": torch.tensor([True, False, True]), "g": torch.randn(2, 2, generator=generator).half()}
    data = _blob(tensors, pad)
    buffer = bytearray(data)  # writable: views
    views = safetensors_tensors(buffer, safetensors_layout(buffer, where="test"))
    copies = safetensors_tensors(data, safetensors_layout(data, where="test"))  # read-only bytes: a copy each
    assert isinstance(views, SafetensorsViews) and not isinstance(copies, SafetensorsViews)
    expected = load_safetensors(data)
    for result in (views, copies):
        assert result.keys() == expected.keys()
        for key, tensor in expected.items():
            assert result[key].dtype == tensor.dtype and result[key].shape == tensor.shape
            assert torch.equal(result[key], tensor), key


def test_header_must_be_utf8_like_the_safetensors_loader():
    from adapterhub.errors import InvalidAdapterError

    header = json.dumps({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode("utf-16")
    with pytest.raises(InvalidAdapterError, match="not a valid safetensors file"):
        safetensors_layout(struct.pack("<Q", len(header)) + header + b"\0" * 4, where="test")


def test_writable_reads_hold_what_was_read(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(bytes(range(256)) * 40_000)  # ~10 MB: large pages asked for
    read = read_observed(path, writable=True)
    assert bytes(read.data) == path.read_bytes() and not memoryview(read.data).readonly
    assert read_observed(path).data == path.read_bytes()
    (tmp_path / "empty").write_bytes(b"")
    assert bytes(read_observed(tmp_path / "empty", writable=True).data) == b""
    grown, shrunk = io.BytesIO(b"0123456789"), io.BytesIO(b"0123")  # the size stat gave before the read: 6
    assert _read_writable(grown, 6) == b"0123456789" and _read_writable(shrunk, 6) == b"0123"
