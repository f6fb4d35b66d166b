"""Prefix tuning: ``spec`` (what it is), ``options`` (its recipe section), ``serving`` (cache entries per row)."""

from .. import register
from .spec import PREFIX, WEIGHTS_KEY, init_prefix_from_text, prefix_dims

register(PREFIX)

__all__ = ["PREFIX", "WEIGHTS_KEY", "init_prefix_from_text", "prefix_dims"]
