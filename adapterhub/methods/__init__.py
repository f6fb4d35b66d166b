"""What each adapter method *is*, apart from how it is served: one file per method.

A method's file here knows its PEFT ``adapter_config.json`` (``peft_type``,
its options), the keys of its weights, whether an adapter fits a base, how a
recipe builds its PEFT config and how it reads in a model card. The registry,
the Hub sync and training ask through :func:`get` / :func:`method_from_config`;
the runtime's per-row math for the same method lives in
``adapterhub/runtime/methods/<name>.py``.

Adding a method means one file here, one under ``runtime/methods/``, a line
in each ``_register`` table, and its tests.

>>> method_from_config({"peft_type": "PREFIX_TUNING"})
'prefix'
>>> names()
('lora', 'prefix', 'adalora', 'ia3', 'bottleneck')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from ..errors import InvalidAdapterError


class MethodSpec(Protocol):
    """The questions every method answers (see ``lora.py`` for a full example)."""

    name: str  # our name, used in recipes and manifests: "lora"
    peft_type: str  # PEFT's adapter_config.json "peft_type": "LORA"
    title: str  # for people: "LoRA"

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

    # Optional (see build_trainable / training_hook / attach_weights below):
    #   build_model(model, recipe, base)            -> a trainable wrapper, for methods PEFT lacks
    #   training_hook(peft_model, recipe, steps)    -> an object with extra_loss() and after_step(step)
    #   attach(model, config, tensors)              -> a wrapper holding stored weights, for evaluation


def _register() -> dict[str, MethodSpec]:
    from .adalora import ADALORA
    from .bottleneck import BOTTLENECK
    from .ia3 import IA3
    from .lora import LORA
    from .prefix import PREFIX

    return {spec.name: spec for spec in (LORA, PREFIX, ADALORA, IA3, BOTTLENECK)}


_SPECS: dict[str, MethodSpec] | None = None


def _specs() -> dict[str, MethodSpec]:
    global _SPECS
    if _SPECS is None:
        _SPECS = _register()
    return _SPECS


def names() -> tuple[str, ...]:
    """The methods adapterhub trains and serves."""
    return tuple(_specs())


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


def config_problem(config: Mapping[str, Any], key: str, kind: str, *, required: bool = False,
                   minimum: float | None = None, nullable: bool = True) -> str | None:
    """Why ``config[key]`` is unusable as ``kind`` (``"int"``, ``"number"``, ``"bool"``, ``"str"``), or ``None``.

    Numbers must be finite (no NaN or infinity, which JSON allows through Python); booleans are no numbers.
    A missing key is fine unless ``required``; so is ``null`` unless ``required`` or not ``nullable``.

    >>> config_problem({"lora_alpha": float("nan")}, "lora_alpha", "number")
    'lora_alpha must be a finite number, not nan'
    """
    import math

    value = config.get(key)
    if value is None and key in config and not nullable:
        return f"{key} is null"
    if value is None:
        return f"{key} is missing (or null)" if required else None
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = {"int": isinstance(value, int) and not isinstance(value, bool),
          "number": numeric and math.isfinite(value),
          "bool": isinstance(value, bool), "str": isinstance(value, str)}[kind]
    shown = repr(value) if len(repr(value)) <= 40 else type(value).__name__
    if not ok:
        what = {"int": "an integer", "number": "a finite number", "bool": "true or false", "str": "a string"}[kind]
        return f"{key} must be {what}, not {shown}"
    if minimum is not None and value < minimum:
        return f"{key} must be at least {minimum:g}, not {shown}"
    return None
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
