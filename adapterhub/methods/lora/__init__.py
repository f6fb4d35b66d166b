"""LoRA: ``spec`` (what it is), ``options`` (its recipe section), ``serving`` / ``layer`` / ``kernels`` (per-row serving)."""

from .. import register
from .spec import LORA, LoraKey, last_layers_targets, parse_key

register(LORA, serving=f"{__name__}.serving:LoraMethod")

__all__ = ["LORA", "LoraKey", "last_layers_targets", "parse_key"]
