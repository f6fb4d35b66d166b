"""Bottleneck adapters: ``config`` (format and keys), ``spec``, ``options``, ``model`` (training), ``serving``."""

from .. import register
from .config import PLACEMENTS, BottleneckConfig, parse_key, placement_modules
from .spec import BOTTLENECK


register(BOTTLENECK, serving=f"{__name__}.serving:BottleneckMethod")

__all__ = ["BOTTLENECK", "PLACEMENTS", "BottleneckConfig", "parse_key", "placement_modules"]
