"""AdaLoRA: ``spec`` (what it is, its training hook), ``options`` (its recipe section), ``serving`` (LoRA's layers)."""

from .. import register
from .spec import ADALORA, AdaLoraHook, parse_key, ranks


register(ADALORA, serving=f"{__name__}.serving:AdaLoraMethod")

__all__ = ["ADALORA", "AdaLoraHook", "parse_key", "ranks"]
