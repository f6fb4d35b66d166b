"""IA³: ``spec`` (what it is), ``options`` (its recipe section), ``serving`` (per-row scaling in patched layers)."""

from .. import register
from .spec import IA3, is_feedforward, parse_key

register(IA3, serving=f"{__name__}.serving:IA3Method")

__all__ = ["IA3", "is_feedforward", "parse_key"]
