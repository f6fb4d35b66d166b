"""Small checks every method's ``spec.py`` shares (an ``adapter_config.json`` value's type and range).

>>> config_problem({"r": 0}, "r", "int", minimum=1)
'r must be at least 1, not 0'
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ..errors import IncompatibleBaseError


def config_problem(config: Mapping[str, Any], key: str, kind: str, *, required: bool = False,
                   minimum: float | None = None, nullable: bool = True) -> str | None:
    """Why ``config[key]`` is unusable as ``kind`` (``"int"``, ``"number"``, ``"bool"``, ``"str"``), or ``None``.

    Numbers must be finite (no NaN or infinity, which JSON allows through Python); booleans are no numbers.
    A missing key is fine unless ``required``; so is ``null`` unless ``required`` or not ``nullable``.

    >>> config_problem({"lora_alpha": float("nan")}, "lora_alpha", "number")
    'lora_alpha must be a finite number, not nan'
    """
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


def adapted_linears(tensor_shapes: Mapping[str, tuple[int, ...]], base: Any,
                    parse: Callable[[str], Any]) -> Iterator[tuple[str, tuple[int, ...], Any, int, int]]:
    """``(key, shape, parsed, in_features, out_features)`` of every tensor ``parse`` recognises.

    ``parse(key)`` gives the module name, or a tuple that starts with it (``None``: not a weight of the
    method). The module must be a linear layer of ``base``.

    Raises:
        IncompatibleBaseError: the base has no such linear layer.
    """
    linear = base.linear_shapes
    for key, shape in tensor_shapes.items():
        parsed = parse(key)
        if parsed is None:
            continue
        module = parsed if isinstance(parsed, str) else parsed[0]
        if module not in linear:
            raise IncompatibleBaseError(f"adapter targets module {module!r}, which this base does not have; "
                                        "use the base the adapter was made for")
        yield key, tuple(shape), parsed, *linear[module]


def rank_settings(config: Mapping[str, Any], **shown: str) -> str:
    """A low-rank method's model-card line: ``shown`` (label -> config key) in order, then its targets;
    ``""`` when the first key is unset.

    >>> rank_settings({"r": 8, "lora_alpha": 16, "target_modules": ["v_proj", "q_proj"]}, r="r", alpha="lora_alpha")
    'r=8, alpha=16, targets: q_proj, v_proj'
    """
    first = next(iter(shown.values()))
    if not config.get(first):
        return ""
    targets = config.get("target_modules")
    targets = ", ".join(sorted(targets)) if isinstance(targets, (list, tuple, set)) else targets
    return ", ".join(f"{label}={config.get(key)}" for label, key in shown.items()) + f", targets: {targets}"


def module_alpha(config: Mapping[str, Any], module: str, *, key: str, default: float = 8) -> float:
    """A module's alpha as PEFT picks it: the first ``alpha_pattern`` key matching ``module``, else ``config[key]``.

    >>> module_alpha({"lora_alpha": 16, "alpha_pattern": {"q_proj": 4}}, "layers.0.q_proj", key="lora_alpha")
    4
    """
    for pattern, value in (config.get("alpha_pattern") or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            return value
    return config.get(key, default)
