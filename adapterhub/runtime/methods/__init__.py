"""How each adapter method is served, behind one small interface: one file per method.

Each method turns a PEFT adapter (its ``adapter_config.json`` dict and its
tensors) into *prepared* tensors — validated against the base, converted to
the base dtype and device, constants folded — and installs them in numbered
slots. Residency (which slot holds what, LRU, budgets) lives in ``slots.py``;
the methods never know adapter names. What a method's files are and whether
they fit a base is :mod:`adapterhub.methods`.

A method reaches its rows one of two ways (its ``routes``):

* ``"layers"``: it patched some modules once; they read the row→slot mapping
  (:class:`~adapterhub.runtime.batch.RowSlots`) of the running forward;
* ``"prefix"``: it contributes cache entries in front of its rows (``batch``).

>>> sorted(build_methods(base))  # doctest: +SKIP
['adalora', 'bottleneck', 'ia3', 'lora', 'prefix']
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar, Literal, Protocol, Sequence

from ..batch import BARE, RowRouting, RowSlots


class Prepared(Protocol):
    """An adapter ready to install: its tensors, and the bytes they hold."""

    nbytes: int


class AdapterMethod(Protocol):
    """What the runtime asks of a method."""

    name: str
    routes: Literal["layers", "prefix"]

    def prepare(self, config: dict[str, Any], tensors: dict[str, Any]) -> Prepared:
        """Validate and convert; raises IncompatibleBaseError / InvalidAdapterError."""

    def install(self, slot: int, prepared: Prepared) -> None:
        """Make ``prepared`` answer for ``slot`` (slot storage only; no module traversal)."""

    def remove(self, slot: int) -> None:
        """Free ``slot``; a no-op when it is empty."""


def build_methods(base: Any) -> dict[str, AdapterMethod]:
    """One instance of every method, bound to ``base`` (an :class:`adapterhub.base.Base`)."""
    from .adalora import AdaLoraMethod
    from .bottleneck import BottleneckMethod
    from .ia3 import IA3Method
    from .lora import LoraMethod
    from .prefix import PrefixMethod

    served = [LoraMethod(base), PrefixMethod(base), AdaLoraMethod(base), IA3Method(base), BottleneckMethod(base)]
    return {method.name: method for method in served}


def route(methods: dict[str, AdapterMethod], rows: Sequence[tuple[str, int] | None], *, repeat: int = 1,
          device: Any = "cpu") -> RowRouting:
    """The routing of one call whose rows use ``(method, slot)`` (``None``: the bare base).

    Layer methods share one :class:`RowSlots` (slots are unique across methods, and a
    layer skips slots it does not hold); the prefix method fills the cache.
    """
    layer_slots = [BARE if row is None or methods[row[0]].routes != "layers" else row[1] for row in rows]
    layers = RowSlots.build(layer_slots, device=device) if any(s != BARE for s in layer_slots) else None
    prefix = None
    for method in methods.values():
        if method.routes == "prefix":
            slots = [BARE if row is None or row[0] != method.name else row[1] for row in rows]
            if any(s != BARE for s in slots):
                prefix = method.batch(slots, repeat=repeat)
    return RowRouting(prefix=prefix, layers=layers, adapter=("rows", rows[0]) if len(set(rows)) == 1 else None)


_PATCH_LOCK = threading.Lock()  # hubs sharing a base patch each linear exactly once per method


class PatchedLayers:
    """What every layer method (LoRA, IA³, bottleneck) keeps: per-slot entries in layers patched once.

    A subclass (a dataclass with ``_linears: {name: nn.Linear}`` and ``_slot_layers: {slot: [layer]}``)
    names its ``layer_class`` (built around a linear, holding ``weights: {slot: entry}``) and the
    ``patch_attr`` it marks a patched linear with. Patching replaces the linear's ``forward`` by an
    instance attribute that wraps the forward found (plain, or another method's patch): the module
    tree and state_dict stay as they were, and nothing is traversed on a switch.
    """

    layer_class: ClassVar[type]
    patch_attr: ClassVar[str]
    _linears: dict[str, Any]
    _slot_layers: dict[int, list[Any]]

    def install(self, slot: int, prepared: Any) -> None:
        """Put ``prepared.layers`` (module name -> entry) in ``slot`` of each module's patched layer."""
        layers = []
        for module_name, entry in prepared.layers.items():
            layer = self._patched(module_name)
            layer.weights[slot] = entry
            layers.append(layer)
        self._slot_layers[slot] = layers

    def remove(self, slot: int) -> None:
        for layer in self._slot_layers.pop(slot, []):
            layer.weights.pop(slot, None)

    def slot_layers(self, slot: int) -> list[Any]:
        """The patched layers holding ``slot``'s entries (weighted mixes read them; see ``runtime/mixing.py``)."""
        return list(self._slot_layers.get(slot, []))

    def _patched(self, module_name: str) -> Any:
        linear = self._linears[module_name]
        with _PATCH_LOCK:
            layer = getattr(linear, self.patch_attr, None)
            if layer is None:
                layer = self.layer_class(linear)
                linear.forward = layer
                object.__setattr__(linear, self.patch_attr, layer)
        return layer


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
