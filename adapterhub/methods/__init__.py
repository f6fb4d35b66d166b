"""Adapter methods: one self-registering folder per method, found here by name or PEFT type.

Each folder ``adapterhub/methods/<name>/`` holds everything that knows its method:

* ``spec.py`` — what it is: its PEFT ``adapter_config.json`` (``peft_type``, options), its weight keys,
  whether an adapter is valid and fits a base, how a recipe builds its PEFT config, its model-card line;
* ``options.py`` — its recipe options (the ``adapter:`` section when ``method:`` names it), a pydantic model;
* ``serving.py`` (and helpers) — how the runtime serves it per row (:mod:`adapterhub.methods.serving`);
* ``__init__.py`` — ``register(SPEC, serving="<module>:<Class>")``: the spec and where its served form is.

The package finds its folders with :mod:`pkgutil` on first use: adding a method is adding a folder
(and its tests); nothing outside the folder names it. The registry, Hub sync, training and the
runtime ask through :func:`get` / :func:`method_from_config` / :func:`build_serving`.

>>> method_from_config({"peft_type": "PREFIX_TUNING"})
'prefix'
>>> "lora" in names() and get("lora").title
'LoRA'
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
from collections.abc import Mapping
from typing import Any, Protocol

from ..errors import InvalidAdapterError
from .checks import config_problem

__all__ = ["MethodSpec", "attach_weights", "build_serving", "build_trainable", "config_problem", "default",
           "get", "method_from_config", "names", "register", "training_hook"]


class MethodSpec(Protocol):
    """The questions every method answers (see ``lora/spec.py`` for a full example; defaults in ``spec.py``)."""

    name: str  # our name, used in recipes and manifests: "lora"
    peft_type: str  # PEFT's adapter_config.json "peft_type": "LORA"
    title: str  # for people: "LoRA"
    summary: str  # one phrase for the recipe's method list: "low-rank update"
    options: type  # its recipe options: a pydantic model whose ``method`` is Literal[name] (see options.py)
    default: bool  # the method a recipe gets when it names none (exactly one has it)
    peft_loads: bool  # plain PEFT loads its adapters (False: adapterhub's own format)
    mergeable: bool  # PEFT's add_weighted_adapter merges it (``adapterhub merge``)
    mixable: bool  # its served layers add low-rank deltas that weighted mixes combine
    encoder: bool  # it trains and serves on encoder bases (with a task head)

    def check_files(self, config: Mapping[str, Any], tensor_shapes: Mapping[str, tuple[int, ...]], *,
                    where: str) -> None:
        """Raise :class:`InvalidAdapterError` unless the config is valid and the weights belong to it."""

    def check_fits(self, config: Mapping[str, Any], tensor_shapes: Mapping[str, tuple[int, ...]],
                   base: Any) -> None:
        """Raise :class:`IncompatibleBaseError` unless the adapter fits ``base`` (shapes and modules)."""

    def settings(self, config: Mapping[str, Any]) -> str:
        """Its main options for model cards and listings, e.g. ``"r=16, alpha=32, targets: q_proj"`` (or ``""``)."""

    def recipe_problems(self, recipe: Any) -> list[str]:
        """What in a recipe cannot work with this method (empty when it can)."""

    def peft_config(self, recipe: Any, base: Any) -> Any:
        """The PEFT config a recipe's ``adapter`` section asks for."""

    def initialise(self, peft_model: Any, tokenizer: Any, recipe: Any) -> None:
        """Set up the fresh adapter's weights beyond PEFT's own initialisation (often a no-op)."""

    def random_model(self, model: Any, **options: Any) -> Any:
        """A fresh trainable adapter on ``model`` for tests and benchmarks (``runtime/testing.py``)."""

    # Optional (see build_trainable / training_hook / attach_weights below):
    #   build_model(model, recipe, base)            -> a trainable wrapper, for methods PEFT lacks
    #   training_hook(peft_model, recipe, steps)    -> an object with extra_loss() and after_step(step)
    #   attach(model, config, tensors)              -> a wrapper holding stored weights, for evaluation


_SPECS: dict[str, MethodSpec] = {}
_SERVING: dict[str, str] = {}  # name -> "module:Class" of its served form
_FOUND = False
_LOCK = threading.RLock()


def register(spec: MethodSpec, *, serving: str) -> MethodSpec:
    """Add a method (called by its folder's ``__init__.py``); returns ``spec``.

    Args:
        spec: what the method is (its checks, PEFT config, recipe options).
        serving: ``"module:Class"`` of its served form, an :class:`~adapterhub.methods.serving.AdapterMethod`
            built as ``Class(base)``; imported only when a hub binds the methods to a base, so reading the
            registry never imports serving code (and a spec never imports its own serving half).

    Raises:
        InvalidAdapterError: another method already has its name or PEFT type.
    """
    with _LOCK:
        for other in _SPECS.values():
            if other is not spec and (other.name == spec.name or other.peft_type == spec.peft_type):
                raise InvalidAdapterError(f"method {spec.name!r} ({spec.peft_type}) clashes with the registered "
                                          f"method {other.name!r} ({other.peft_type}); rename one")
        _SPECS[spec.name] = spec
        _SERVING[spec.name] = serving
    return spec


def _specs() -> dict[str, MethodSpec]:
    """Every method, once each subfolder of this package has been imported (it registers itself)."""
    global _FOUND
    if not _FOUND:
        with _LOCK:
            if not _FOUND:
                for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
                    if module.ispkg:
                        importlib.import_module(f"{__name__}.{module.name}")
                _FOUND = True
    return _SPECS


def names() -> tuple[str, ...]:
    """The methods adapterhub trains and serves, in name order."""
    return tuple(sorted(_specs()))


def get(name: str) -> MethodSpec:
    """The method called ``name``.

    Raises:
        InvalidAdapterError: no such method.
    """
    spec = _specs().get(name)
    if spec is None:
        raise InvalidAdapterError(f"unknown adapter method {name!r}; adapterhub supports {', '.join(names())}")
    return spec


def method_from_config(config: Mapping[str, Any]) -> str:
    """Our method name for a PEFT ``adapter_config.json`` (``LORA`` -> ``lora``, ...).

    Raises:
        InvalidAdapterError: no ``peft_type`` or one adapterhub does not support.
    """
    peft_type = config.get("peft_type")
    supported = ", ".join(f"{spec.peft_type} ({spec.name})" for spec in _specs().values())
    if not isinstance(peft_type, str):
        found = "missing" if peft_type is None else f"a {type(peft_type).__name__}, not a string"
        raise InvalidAdapterError(f"unsupported method: adapter_config.json's peft_type is {found}; "
                                  f"adapterhub supports {supported}")
    for spec in _specs().values():
        if peft_type == spec.peft_type:
            return spec.name
    shown = peft_type if len(peft_type) <= 60 else peft_type[:60] + "..."
    raise InvalidAdapterError(f"unsupported method: adapter_config.json has peft_type={shown!r}; "
                              f"adapterhub supports {supported}")


def build_trainable(spec: MethodSpec, model: Any, recipe: Any, base: Any) -> Any:
    """A fresh trainable adapter on ``model``: the method's own wrapper, else PEFT's ``get_peft_model``.

    >>> peft_model = build_trainable(get("ia3"), base.model, recipe, base)  # doctest: +SKIP
    """
    build = getattr(spec, "build_model", None)
    if build is not None:
        return build(model, recipe, base)
    from peft import get_peft_model

    return get_peft_model(model, spec.peft_config(recipe, base))


class TrainingHook(Protocol):
    """Per-step work a method asks of the training loop (AdaLoRA's budget allocation)."""

    def extra_loss(self) -> Any:
        """A regulariser added once per optimizer step to the (mean) loss, or ``None``."""

    def after_step(self, step: int) -> None:
        """Called after ``optimizer.step()`` and before ``zero_grad``; ``step`` counts from 1."""


def training_hook(spec: MethodSpec, peft_model: Any, recipe: Any, total_steps: int) -> TrainingHook | None:
    """The method's :class:`TrainingHook` for this run, or ``None`` when it needs none.

    Raises:
        RecipeError: the recipe's schedule does not fit ``total_steps`` (AdaLoRA).

    >>> training_hook(get("lora"), peft_model, recipe, 64) is None  # doctest: +SKIP
    True
    """
    make = getattr(spec, "training_hook", None)
    return None if make is None else make(peft_model, recipe, total_steps)


def attach_weights(model: Any, config: Mapping[str, Any], tensors: Mapping[str, Any]) -> Any:
    """A model with stored adapter weights attached (a ``PeftModel``, or the method's own wrapper), in eval mode.

    Raises:
        InvalidAdapterError: the config names a method adapterhub does not know.

    >>> attach_weights(base.model, loaded.config, loaded.tensors).eval()  # doctest: +SKIP
    """
    spec = get(method_from_config(config))
    attach = getattr(spec, "attach", None)
    if attach is not None:
        return attach(model, config, tensors)
    import peft

    wrapped = peft.get_peft_model(model, peft.PeftConfig.from_peft_type(**config))
    peft.set_peft_model_state_dict(wrapped, dict(tensors))
    return wrapped.eval()


def default() -> str:
    """The method a recipe gets when its ``adapter`` section names none.

    >>> default()
    'lora'
    """
    return next(name for name, spec in _specs().items() if spec.default)


def build_serving(base: Any) -> dict[str, Any]:
    """Every method's served form bound to ``base``, by name (see :func:`adapterhub.runtime.methods.build_methods`)."""
    served = {}
    for name in _specs():
        module, cls = _SERVING[name].split(":")
        served[name] = getattr(importlib.import_module(module), cls)(base)
    return served
