"""Adapter methods behind one small interface.

Each method turns a PEFT adapter (its ``adapter_config.json`` dict and its
tensors) into *prepared* tensors — validated against the base, converted to
the base dtype and device, constants folded — and installs them in numbered
slots. Residency (which slot holds what, LRU, budgets) lives in ``slots.py``;
the methods never know adapter names.

>>> sorted(build_methods(base))  # doctest: +SKIP
['lora', 'prefix']
"""

from __future__ import annotations

from typing import Any, Protocol


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
