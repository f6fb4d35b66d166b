"""Defaults every method's ``spec.py`` starts from: the capability flags, no recipe problems, no extra set-up,
PEFT's own random adapter for tests.

A method's spec is a frozen dataclass deriving from :class:`MethodBase`; it sets ``name``, ``peft_type``,
``title``, ``summary`` and ``options_class`` and answers the questions of :class:`adapterhub.methods.MethodSpec`.

>>> MethodBase().mergeable, MethodBase().peft_loads
(False, True)
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MethodBase:
    name: str = ""
    peft_type: str = ""
    title: str = ""
    summary: str = ""
    options_class: str = ""  # its recipe options: this class in the folder's ``options.py``
    default: bool = False
    peft_loads: bool = True
    mergeable: bool = False
    mixable: bool = False
    encoder: bool = False
    noise_std: float = 1.0  # scale of random test weights (``random_weights``)

    @property
    def options(self) -> type:
        """Its recipe options, ``options_class`` of the folder's ``options.py`` (a pydantic model; imported when a
        recipe is read, not when the registry is)."""
        package = type(self).__module__.rsplit(".", 1)[0]
        return getattr(importlib.import_module(f"{package}.options"), self.options_class)

    def settings(self, config: Mapping[str, Any]) -> str:
        return ""

    def recipe_problems(self, recipe: Any) -> list[str]:
        return []

    def initialise(self, peft_model: Any, tokenizer: Any, recipe: Any) -> None:
        return None

    def random_config(self, common: Mapping[str, Any], options: Mapping[str, Any]) -> Any:
        """The PEFT config of a random test adapter (``common``: r, lora_alpha, target_modules, ...)."""
        raise NotImplementedError(f"method {self.name!r} makes no random adapters")

    def random_model(self, model: Any, common: Mapping[str, Any], options: Mapping[str, Any]) -> Any:
        """A fresh adapter on ``model`` for tests and benchmarks (PEFT's ``get_peft_model`` by default)."""
        from peft import get_peft_model

        return get_peft_model(model, self.random_config(common, options))

    def random_weights(self, peft_model: Any, generator: Any, std: float | None) -> None:
        """Fill every trainable parameter with seeded noise of scale ``std`` (default :attr:`noise_std`)."""
        import torch

        with torch.no_grad():
            for name, parameter in peft_model.named_parameters():
                if parameter.requires_grad:
                    noise = torch.randn(parameter.shape, generator=generator)
                    parameter.copy_(self.noise(name, parameter, noise, std))

    def noise(self, name: str, parameter: Any, noise: Any, std: float | None) -> Any:
        """The random value of one parameter (a method overrides it for scales, magnitudes ...)."""
        return noise * (std if std is not None else self.noise_std)

