"""LoHa: ``spec`` (what it is), ``options`` (its recipe section), ``serving`` (per-row deltas in patched layers)."""

from .. import register
from .spec import LOHA, parse_key

register(LOHA, serving=f"{__name__}.serving:LohaMethod")

__all__ = ["LOHA", "parse_key"]
