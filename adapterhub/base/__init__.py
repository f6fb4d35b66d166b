"""The frozen base model: loading by alias, folder or Hugging Face id; quantisation; identity.

>>> from adapterhub.base import load_base
>>> base = load_base()  # doctest: +SKIP
"""

from .identity import fingerprint
from .loading import Base, BaseSpec, linear_shapes, load_base, resolve

__all__ = ["Base", "BaseSpec", "fingerprint", "linear_shapes", "load_base", "resolve"]
