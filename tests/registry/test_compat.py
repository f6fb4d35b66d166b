"""Base compatibility: fingerprints, LoRA target modules and shapes, prefix-tuning dimensions."""

from __future__ import annotations

import dataclasses
import json

import pytest

from adapterhub.methods.prefix import prefix_dims
from adapterhub.registry.compat import check_compatible
from adapterhub.errors import IncompatibleBaseError, InvalidAdapterError
from adapterhub.registry.manifest import CONFIG_FILE, WEIGHTS_FILE
from adapterhub.registry.safetensors_file import safetensors_shapes

LORA = {"peft_type": "LORA"}
Q = "base_model.model.model.layers.0.self_attn.q_proj"
V = "base_model.model.model.layers.1.self_attn.v_proj"
PREFIX = {"peft_type": "PREFIX_TUNING", "num_layers": 2, "token_dim": 32}


def _saved(folder):
    config = json.loads((folder / CONFIG_FILE).read_text())
    return config, safetensors_shapes((folder / WEIGHTS_FILE).read_bytes(), where="test")


@pytest.mark.parametrize("fixture", ["lora_dir", "prefix_dir"])
def test_adapters_saved_by_peft_on_the_base_fit_it(request, tiny_base, fixture):
    config, shapes = _saved(request.getfixturevalue(fixture))
    check_compatible(config, shapes, tiny_base, fingerprint=None)
    check_compatible(config, shapes, tiny_base, fingerprint=tiny_base.fingerprint)


def test_prefix_dims_follow_peft_for_grouped_query_attention(tiny_base):
    assert prefix_dims(tiny_base.model.config) == (2, 2 * 16)  # 2 layers, 2 kv heads x head_dim 16


@pytest.mark.parametrize("config, shapes, message", [
    (LORA, {f"{Q}.lora_A.weight": (4, 64), f"{Q}.lora_B.weight": (64, 4)}, None),
    (LORA, {f"{V}.lora_A.weight": (4, 64), f"{V}.lora_B.weight": (32, 4)}, None),
    (LORA, {f"{Q}.lora_A.weight": (4, 96)}, r"has in_features=64"),
    (LORA, {f"{V}.lora_B.weight": (64, 4)}, r"layers\.1\.self_attn\.v_proj has out_features=32"),
    (LORA, {"base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight": (4, 64)},
     r"targets module 'model\.layers\.7\.self_attn\.q_proj'"),
    (LORA, {"base_model.model.transformer.h.0.attn.c_attn.lora_A.weight": (4, 64)}, "which this base does not have"),
    (LORA, {"base_model.model.model.embed_tokens.lora_embedding_A": (4, 384)}, None),
    (LORA, {"base_model.model.model.wte.lora_embedding_A": (4, 384)}, r"targets module 'model\.wte'"),
    (PREFIX, {"prompt_embeddings": (4, 128)}, None),
    ({**PREFIX, "num_layers": 3}, {"prompt_embeddings": (4, 192)}, "num_layers=3 but this base needs num_layers=2"),
    ({**PREFIX, "token_dim": 64}, {"prompt_embeddings": (4, 256)}, "token_dim=64 but this base needs token_dim=32"),
    (PREFIX, {"prompt_embeddings": (4, 100)}, r"needs \(num_virtual_tokens, 128\)"),
])
def test_shapes_and_modules(tiny_base, config, shapes, message):
    if message is None:
        check_compatible(config, shapes, tiny_base, fingerprint=None)
    else:
        with pytest.raises(IncompatibleBaseError, match=message):
            check_compatible(config, shapes, tiny_base, fingerprint=None)


def test_a_recorded_fingerprint_of_another_base_is_refused(lora_dir, tiny_base):
    config, shapes = _saved(lora_dir)
    with pytest.raises(IncompatibleBaseError, match="made for base 'llama-other'"):
        check_compatible(config, shapes, tiny_base, fingerprint="llama-other")
    renamed = dataclasses.replace(tiny_base, fingerprint="llama-renamed")
    with pytest.raises(IncompatibleBaseError, match="this base is 'llama-renamed'"):
        check_compatible(config, shapes, renamed, fingerprint=tiny_base.fingerprint)


def test_same_architecture_other_weights_fits_only_without_a_recorded_fingerprint(lora_dir, tiny_base,
                                                                                   other_tiny_llama_dir):
    from adapterhub import load_base

    other = load_base(str(other_tiny_llama_dir), device="cpu")
    config, shapes = _saved(lora_dir)
    check_compatible(config, shapes, other, fingerprint=None)
    with pytest.raises(IncompatibleBaseError, match=other.fingerprint):
        check_compatible(config, shapes, other, fingerprint=tiny_base.fingerprint)


def test_unsupported_methods_are_refused(tiny_base):
    with pytest.raises(InvalidAdapterError, match="unsupported method"):
        check_compatible({"peft_type": "VERA"}, {}, tiny_base, fingerprint=None)
