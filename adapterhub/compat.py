"""Does an adapter fit a base model? Fingerprint, target modules and shapes.

Works from the adapter's ``adapter_config.json`` and its tensor shapes alone
(no tensors are loaded), so the registry can check at add time and at load time.

>>> check_compatible(config, shapes, base, fingerprint=None)  # doctest: +SKIP
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .errors import IncompatibleBaseError
from .manifest import method_from_config

PEFT_PREFIX = "base_model.model."
# "<module>.lora_A.weight", "<module>.lora_B.default.weight", "<module>.lora_embedding_A"
_LORA_KEY = re.compile(r"^(?P<module>.+)\.(?P<kind>lora_A|lora_B|lora_embedding_A|lora_embedding_B)(?:\.[^.]+)*$")


def check_compatible(config: Mapping[str, Any], tensor_shapes: Mapping[str, tuple[int, ...]], base: Any, *,
                     fingerprint: str | None) -> None:
    """Raise unless the adapter fits ``base``.

    Args:
        config: the adapter's ``adapter_config.json``.
        tensor_shapes: ``{PEFT weight key: shape}`` from ``adapter_model.safetensors``.
        base: an :class:`adapterhub.Base` (uses ``fingerprint``, ``linear_shapes`` and ``model.config``).
        fingerprint: the base fingerprint recorded with the adapter, if any.

    Raises:
        IncompatibleBaseError: another base's fingerprint, a target module the base lacks,
            or a shape that differs (the message names the module and both shapes).

    >>> check_compatible({"peft_type": "LORA"}, {}, base, fingerprint="llama-x")  # doctest: +SKIP
    Traceback (most recent call last):
    IncompatibleBaseError: adapter was made for base 'llama-x' ...
    """
    if fingerprint and fingerprint != base.fingerprint:
        raise IncompatibleBaseError(
            f"adapter was made for base {fingerprint!r} but this base is {base.fingerprint!r}; "
            "load the base it was trained on, or train the adapter again on this one")
    method = method_from_config(config)
    if method == "lora":
        _check_lora(tensor_shapes, base)
    elif method == "prefix":
        _check_prefix(config, tensor_shapes, base)


def _check_lora(tensor_shapes: Mapping[str, tuple[int, ...]], base: Any) -> None:
    linear = base.linear_shapes
    embeddings: set[str] | None = None
    for key, shape in tensor_shapes.items():
        match = _LORA_KEY.match(key.removeprefix(PEFT_PREFIX))
        if not match or key.endswith(".bias"):  # lora_bias=True adds lora_B.bias [out_features]
            continue
        module, kind = match["module"], match["kind"]
        if kind.startswith("lora_embedding"):
            if embeddings is None:
                embeddings = {name for name, _ in base.model.named_modules()}
            if module not in embeddings:
                raise _missing(module, linear)
            continue
        if module not in linear:
            raise _missing(module, linear)
        in_features, out_features = linear[module]
        expected = in_features if kind == "lora_A" else out_features
        actual = shape[1] if kind == "lora_A" else shape[0]
        if len(shape) != 2 or actual != expected:
            side = "in_features" if kind == "lora_A" else "out_features"
            raise IncompatibleBaseError(
                f"adapter tensor {key} has shape {tuple(shape)} but base module {module} has {side}={expected} "
                f"(base shape in={in_features}, out={out_features}); the adapter was made for a different architecture")


def _missing(module: str, linear: Mapping[str, tuple[int, int]]) -> IncompatibleBaseError:
    example = next(iter(linear), "none")
    return IncompatibleBaseError(f"adapter targets module {module!r}, which this base does not have "
                                 f"(its linear modules look like {example!r}); use the base the adapter was made for")


def expected_prefix_dims(model_config: Any) -> tuple[int, int]:
    """``(num_layers, token_dim)`` PEFT prefix tuning uses for a transformers config (KV width for GQA)."""
    text = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    heads = int(text.num_attention_heads)
    head_dim = getattr(text, "head_dim", None) or int(text.hidden_size) // heads
    kv_heads = getattr(text, "num_key_value_heads", None)
    token_dim = int(head_dim) * int(kv_heads) if kv_heads else int(text.hidden_size)
    return int(text.num_hidden_layers), token_dim


def _check_prefix(config: Mapping[str, Any], tensor_shapes: Mapping[str, tuple[int, ...]], base: Any) -> None:
    num_layers, token_dim = expected_prefix_dims(base.model.config)
    for field, want in (("num_layers", num_layers), ("token_dim", token_dim)):
        if config.get(field) != want:
            raise IncompatibleBaseError(
                f"prefix adapter has {field}={config.get(field)} but this base needs {field}={want}; "
                "the adapter was made for a different architecture")
    shape = tuple(tensor_shapes.get("prompt_embeddings", ()))
    width = num_layers * 2 * token_dim
    if len(shape) != 2 or shape[1] != width:
        raise IncompatibleBaseError(f"prefix adapter tensor prompt_embeddings has shape {shape} but this base needs "
                                    f"(num_virtual_tokens, {width}) = (n, num_layers*2*token_dim)")
