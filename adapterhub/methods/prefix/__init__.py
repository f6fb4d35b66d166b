"""Prefix tuning: ``spec`` (what it is), ``options`` (its recipe section), ``serving`` (cache entries per row)."""

from .. import register
from .spec import PREFIX, WEIGHTS_KEY, init_prefix_from_text, prefix_dims


register(PREFIX, serving=f"{__name__}.serving:PrefixMethod")

__all__ = ["PREFIX", "WEIGHTS_KEY", "init_prefix_from_text", "prefix_dims"]
