"""How a method is served, behind one small interface (each method's ``serving.py`` implements it).

Each method turns a PEFT adapter (its ``adapter_config.json`` dict and its
tensors) into *prepared* tensors — validated against the base, converted to
the base dtype and device, constants folded — and installs them in numbered
slots. Residency (which slot holds what, LRU, budgets) lives in the runtime;
the methods never know adapter names.

A method reaches its rows one of two ways (its ``routes``):

* ``"layers"``: it patched some modules once; they read the row→slot mapping
  (:class:`~adapterhub.methods.rows.RowSlots`) of the running forward;
* ``"prefix"``: it contributes cache entries in front of its rows (``batch``).

Shared here: the :class:`AdapterMethod` protocol and :class:`PatchedLayers` (layers patched once,
per-slot entries) that LoRA, IA³ and the bottleneck build on.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

from ..errors import IncompatibleBaseError
from .rows import active_rows


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


class AddedLayer:
    """A linear layer's replacement ``forward`` that adds, to each row's output, what its slot's entry adds.

    Entries implement ``added(x, out)`` (``x``: the layer's input rows, ``out``: its output rows; the
    result is added to ``out``). Bottleneck adapters add a function of the output, LoHa one of the input.
    """

    def __init__(self, linear: Any) -> None:
        self.linear = linear
        self.inner_forward = linear.forward
        self.weights: dict[int, Any] = {}  # slot -> entry

    def __call__(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        out = self.inner_forward(x, *args, **kwargs)
        rows = active_rows()
        if rows is None or not self.weights:
            return out
        rows = rows.for_batch(x.shape[0])
        if rows.uniform is not None:
            entry = self.weights.get(rows.uniform)
            return out if entry is None else out + entry.added(x, out)
        for slot, index in rows.groups:
            entry = self.weights.get(slot)
            if entry is not None:
                part = out[index]
                out[index] = part + entry.added(x[index], part)
        return out


@dataclass
class PreparedLayers:
    """A layer method's prepared adapter: one entry per module name, and the bytes they hold."""

    layers: dict[str, Any]  # module name -> entry (with .nbytes)
    nbytes: int = 0

    @classmethod
    def of(cls, layers: dict[str, Any]) -> PreparedLayers:
        return cls(layers=layers, nbytes=sum(entry.nbytes for entry in layers.values()))


_PATCH_LOCK = threading.Lock()  # hubs sharing a base patch each linear exactly once per method


@dataclass
class PatchedLayers:
    """What every layer method (LoRA, IA³, LoHa, bottleneck) keeps: per-slot entries in layers patched once.

    A subclass (a dataclass) sets its ``name``, the ``layer_class`` it patches linears with (built around a
    linear, holding ``weights: {slot: entry}``) and the ``patch_attr`` it marks a patched linear with.
    :meth:`bind` indexes the base's linears (``_linears: {name: nn.Linear}``); ``_slot_layers`` maps a slot
    to the layers holding its entries. Patching replaces the linear's ``forward`` by an instance attribute
    that wraps the forward found (plain, or another method's patch): the module tree and state_dict stay as
    they were, and nothing is traversed on a switch.
    """

    base: Any
    name: str = ""
    routes: str = "layers"
    _slot_layers: dict[int, list[Any]] = field(default_factory=dict)
    layer_class: ClassVar[type]
    patch_attr: ClassVar[str]

    def __post_init__(self) -> None:
        self.bind(self.base.model.named_modules())

    def bind(self, modules: Any) -> None:
        """Index the linear layers among ``modules`` (``(name, module)`` pairs), and the base's dtype and device."""
        import torch

        self._linears = {name: module for name, module in modules if isinstance(module, torch.nn.Linear)}
        self._dtype = getattr(torch, self.base.spec.dtype)
        self._device = next(self.base.model.parameters()).device

    def linear(self, module_name: str, *, verb: str = "targets") -> Any:
        """The base's linear layer ``module_name`` (an adapter's module key).

        Raises:
            IncompatibleBaseError: the base has no linear layer of that name.
        """
        module = self._linears.get(module_name)
        if module is None:
            raise IncompatibleBaseError(f"the adapter {verb} {module_name!r}, which is not a linear layer of base "
                                        f"{self.base.spec.name!r}; was it trained for another model?")
        return module

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
