"""The identity of a base model's weights: a fingerprint read from its files.

The fingerprint folds in the architecture fields of ``config.json`` and every
tensor's name, dtype, shape and first/last 64 KiB, read straight from the
safetensors files, so quantising at load time never changes it.

>>> from adapterhub.base import fingerprint
>>> fingerprint("/path/to/model")  # doctest: +SKIP
'llama-30L-576h-49152v-3f0c2a6b9d1e4f70'
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

from .._transformers import text_config_dict

_SAMPLE_BYTES = 64 * 1024  # per tensor, head and tail, folded into the fingerprint


def _safetensors_headers(path: Path) -> list[tuple[Path, int, dict[str, Any]]]:
    """``(file, data offset, header)`` for every safetensors file, sorted by name."""
    headers = []
    for file in sorted(path.glob("*.safetensors")):
        with open(file, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        headers.append((file, 8 + length, header))
    return headers


def logical_parameter_count(path: Path) -> int:
    total = 0
    for _, _, header in _safetensors_headers(path):
        for name, meta in header.items():
            if name != "__metadata__":
                count = 1
                for dim in meta["shape"]:
                    count *= dim
                total += count
    return total


def fingerprint(path: str | Path) -> str:
    """Identity of the weights in a model directory, independent of load-time quantisation.

    Folds in the architecture fields of ``config.json``, every tensor's name,
    dtype and shape, and the first and last 64 KiB of every tensor's bytes.
    Returns ``"<model_type>-<layers>L-<hidden>h-<vocab>v-<16 hex>"``.

    >>> fingerprint("/path/to/model")  # doctest: +SKIP
    'llama-30L-576h-49152v-3f0c2a6b9d1e4f70'
    """
    path = Path(path)
    config = json.loads((path / "config.json").read_text())
    config = text_config_dict(config)
    keys = ("model_type", "architectures", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads", "num_key_value_heads", "vocab_size", "head_dim", "tie_word_embeddings")
    digest = hashlib.sha256(json.dumps({k: config.get(k) for k in keys}, sort_keys=True).encode())
    tensors = []
    for file, offset, header in _safetensors_headers(path):
        for name, meta in header.items():
            if name != "__metadata__":
                tensors.append((name, file, offset, meta))
    tensors.sort(key=lambda item: item[0])
    for name, file, offset, meta in tensors:
        start, end = (offset + b for b in meta["data_offsets"])
        digest.update(f"{name}|{meta['dtype']}|{meta['shape']}|".encode())
        with open(file, "rb") as handle:
            handle.seek(start)
            digest.update(handle.read(min(_SAMPLE_BYTES, end - start)))
            if end - start > 2 * _SAMPLE_BYTES:
                handle.seek(end - _SAMPLE_BYTES)
                digest.update(handle.read(_SAMPLE_BYTES))
    return (f"{config.get('model_type', 'model')}-{config.get('num_hidden_layers')}L-"
            f"{config.get('hidden_size')}h-{config.get('vocab_size')}v-{digest.hexdigest()[:16]}")
