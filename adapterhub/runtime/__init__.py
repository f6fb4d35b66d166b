"""The runtime: one resident base model, adapters hot-swapped per call or mixed per row.

>>> from adapterhub.runtime import AdapterHub
>>> hub = AdapterHub()  # doctest: +SKIP
"""

from __future__ import annotations

from .hub import AdapterHub
from .slots import ResidentInfo

__all__ = ["AdapterHub", "ResidentInfo"]
