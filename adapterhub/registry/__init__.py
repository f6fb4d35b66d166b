"""The adapter store: a SQLite index over immutable, checksummed version folders.

>>> from adapterhub.registry import Registry
>>> registry = Registry("/tmp/registry")  # doctest: +SKIP
"""

from .entries import NewEntry
from .manifest import AdapterRecord, LoadedAdapter
from .store import Registry

__all__ = ["AdapterRecord", "LoadedAdapter", "NewEntry", "Registry"]
