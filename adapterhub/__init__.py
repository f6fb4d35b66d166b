"""adapterhub: one frozen base model, many hot-swappable domain adapters.

The public API is small and imported lazily (``import adapterhub`` stays fast):

>>> import adapterhub
>>> base = adapterhub.load_base()  # doctest: +SKIP
>>> hub = adapterhub.AdapterHub()  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

from ._transformers import quiet_bitsandbytes_notice

__version__ = "0.1.0"
quiet_bitsandbytes_notice()

_EXPORTS = {
    "load_base": "adapterhub.base",
    "Base": "adapterhub.base",
    "BaseSpec": "adapterhub.base",
    "Registry": "adapterhub.registry",
    "AdapterRecord": "adapterhub.registry",
    "load_recipe": "adapterhub.training",
    "Recipe": "adapterhub.training",
    "train": "adapterhub.training",
    "merge_adapters": "adapterhub.training",
    "AdapterHub": "adapterhub.runtime",
    "build_router": "adapterhub.runtime.routers",
}
__all__ = ["__version__", "errors", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name == "errors":
        return importlib.import_module("adapterhub.errors")
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'adapterhub' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
