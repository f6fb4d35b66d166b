"""Task heads saved with an encoder adapter: which keys they are, which base kind they need, whether they fit.

An encoder adapter is trained inside ``AutoModelFor{Sequence,Token}Classification``; PEFT saves its
new head in full (``modules_to_save``) beside the low-rank weights, under the module's own name::

    base_model.model.classifier.weight            # [num_labels, hidden]  (BERT, token classification)
    base_model.model.classifier.dense.weight      # [hidden, hidden]      (RoBERTa's sequence head)
    base_model.model.classifier.out_proj.weight   # [num_labels, hidden]

The PEFT ``task_type`` says which base an adapter belongs on: ``CAUSAL_LM`` (or none) on a decoder,
``SEQ_CLS`` / ``TOKEN_CLS`` on an encoder. This file knows only keys, shapes and configs; the
runtime's per-row head math is :mod:`adapterhub.runtime.heads`.

>>> split_head({"modules_to_save": ["classifier"]},
...            {"base_model.model.classifier.weight": (3, 384),
...             "base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight": (8, 384)})[0]
{'classifier.weight': (3, 384)}
>>> base_kind_of({"task_type": "TOKEN_CLS"}), base_kind_of({"task_type": "CAUSAL_LM"})
('encoder', 'decoder')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from .._transformers import strip_peft_prefix
from ..errors import IncompatibleBaseError, InvalidAdapterError

ENCODER_TASK_TYPES = {"SEQ_CLS": "sequence_classification", "TOKEN_CLS": "token_classification"}
"""PEFT task types served on an encoder base, and the adapterhub task each one is."""

T = TypeVar("T")


def base_kind_of(config: Mapping[str, Any]) -> str:
    """``"encoder"`` for a ``SEQ_CLS`` / ``TOKEN_CLS`` adapter, else ``"decoder"``."""
    return "encoder" if config.get("task_type") in ENCODER_TASK_TYPES else "decoder"


def head_modules(config: Mapping[str, Any]) -> list[str]:
    """The module names PEFT saved in full (``modules_to_save``), e.g. ``["classifier", "score"]``."""
    return list(config.get("modules_to_save") or [])


def split_head(config: Mapping[str, Any], tensors: Mapping[str, T]) -> tuple[dict[str, T], dict[str, T]]:
    """Split an adapter's tensors (or shapes) into its head and the rest.

    Returns:
        ``(head, rest)``: ``head`` keyed relative to the task model (``"classifier.weight"``),
        ``rest`` with the original keys.
    """
    modules = head_modules(config)
    head: dict[str, T] = {}
    rest: dict[str, T] = {}
    for key, value in tensors.items():
        relative = strip_peft_prefix(key)
        if any(relative.startswith(f"{module}.") for module in modules):
            head[relative] = value
        else:
            rest[key] = value
    return head, rest


def check_task_fits(config: Mapping[str, Any], tensor_shapes: Mapping[str, tuple[int, ...]], base: Any) -> None:
    """Raise unless the adapter's kind matches the base and its head reads the base's hidden size.

    Args:
        config: ``adapter_config.json``.
        tensor_shapes: ``{PEFT key: shape}``.
        base: an :class:`adapterhub.Base` (``kind``, ``spec.hidden_size``).

    Raises:
        IncompatibleBaseError: a decoder adapter offered to an encoder base or the reverse, or a head
            whose input width differs from the base's hidden size.
        InvalidAdapterError: an encoder adapter without a saved head.

    >>> check_task_fits({"task_type": "CAUSAL_LM"}, {}, encoder_base)  # doctest: +SKIP
    Traceback (most recent call last):
    IncompatibleBaseError: this is a decoder (causal LM) adapter but the base ... is an encoder ...
    """
    wanted, kind = base_kind_of(config), getattr(base, "kind", "decoder")
    name = getattr(getattr(base, "spec", None), "name", "this base")
    if wanted != kind:
        what = {"encoder": f"an encoder adapter (PEFT task_type {config.get('task_type')}, a classification head)",
                "decoder": f"a decoder (causal LM) adapter (PEFT task_type {config.get('task_type')})"}[wanted]
        raise IncompatibleBaseError(
            f"this is {what} but the base {name!r} is a{'n' if kind == 'encoder' else ''} {kind}; "
            f"load it on a{'n' if wanted == 'encoder' else ''} {wanted} base "
            f"({'e.g. minilm-l6' if wanted == 'encoder' else 'e.g. smollm2-135m-instruct'})")
    if kind != "encoder":
        return
    head, _ = split_head(config, tensor_shapes)
    if not head:
        raise InvalidAdapterError(f"the {config.get('task_type')} adapter has no saved head (modules_to_save "
                                  f"{head_modules(config)} hold no weights); save it from a PEFT model whose "
                                  "classifier is in modules_to_save")
    hidden = int(base.spec.hidden_size)
    for key, shape in head.items():
        if key.endswith(".weight") and ".dense." not in f".{key}" and len(shape) == 2 and shape[1] != hidden:
            raise IncompatibleBaseError(f"the adapter's head {key} reads {shape[1]} features but base {name!r} has "
                                        f"hidden size {hidden}; the adapter was made for another encoder")
        if key.endswith("dense.weight") and tuple(shape) != (hidden, hidden):
            raise IncompatibleBaseError(f"the adapter's head {key} has shape {tuple(shape)} but base {name!r} has "
                                        f"hidden size {hidden}; the adapter was made for another encoder")


def num_labels(head_shapes: Mapping[str, tuple[int, ...]]) -> int:
    """How many classes a head predicts (rows of its last projection).

    >>> num_labels({"classifier.weight": (7, 384), "classifier.bias": (7,)})
    7
    """
    finals = [shape for key, shape in head_shapes.items() if key.endswith(".weight") and "dense." not in key]
    if not finals:
        raise InvalidAdapterError(f"cannot tell the head's output size from {sorted(head_shapes)}")
    return int(finals[-1][0])
