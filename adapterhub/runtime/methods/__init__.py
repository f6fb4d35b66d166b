"""Adapter methods behind one small interface.

Each method turns a PEFT adapter (its ``adapter_config.json`` dict and its
tensors) into *prepared* tensors — validated against the base, converted to
the base dtype and device, constants folded — and installs them in numbered
slots. Residency (which slot holds what, LRU, budgets) lives in ``slots.py``;
the methods never know adapter names.

>>> method_name({"peft_type": "LORA"}), method_name({"peft_type": "PREFIX_TUNING"})
('lora', 'prefix')
"""

from __future__ import annotations

from typing import Any, Protocol

from ...errors import InvalidAdapterError

PEFT_TYPES = {"LORA": "lora", "PREFIX_TUNING": "prefix"}
"""PEFT ``peft_type`` -> our lowercase method name (the manifest's ``method``)."""


class Prepared(Protocol):
    """An adapter ready to install: its tensors, and the bytes they hold."""

    nbytes: int


class AdapterMethod(Protocol):
    """What the runtime asks of a method."""

    name: str

    def prepare(self, config: dict[str, Any], tensors: dict[str, Any]) -> Prepared:
        """Validate and convert; raises IncompatibleBaseError / InvalidAdapterError."""

    def install(self, slot: int, prepared: Prepared) -> None:
        """Make ``prepared`` answer for ``slot`` (slot storage only; no module traversal)."""

    def remove(self, slot: int) -> None:
        """Free ``slot``; a no-op when it is empty."""


def method_name(config: dict[str, Any]) -> str:
    """Our method name for a PEFT config dict.

    Raises:
        InvalidAdapterError: the PEFT type is not served by the runtime.
    """
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type not in PEFT_TYPES:
        raise InvalidAdapterError(f"adapter type {config.get('peft_type')!r} is not supported by the runtime; "
                                  f"supported PEFT types: {', '.join(PEFT_TYPES)}")
    return PEFT_TYPES[peft_type]


def build_methods(base: Any) -> dict[str, AdapterMethod]:
    """One instance of every method, bound to ``base`` (an :class:`adapterhub.base.Base`)."""
    from .lora import LoraMethod
    from .prefix import PrefixMethod

    return {"lora": LoraMethod(base), "prefix": PrefixMethod(base)}


def tensor_bytes(*tensors: Any) -> int:
    """Bytes held by the given tensors (``None`` entries are skipped)."""
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def owned(tensor: Any, *, dtype: Any, device: Any) -> Any:
    """``tensor`` as ``dtype`` on ``device`` in its own compact storage.

    Tensors deserialised from one buffer may be views into it; keeping such a
    view would keep the whole file alive, so those are copied.
    """
    converted = tensor.to(device=device, dtype=dtype)
    if converted.untyped_storage().nbytes() != converted.numel() * converted.element_size() \
            or not converted.is_contiguous():
        converted = converted.contiguous().clone()
    return converted
