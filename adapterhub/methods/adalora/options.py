"""AdaLoRA's recipe options (``adapter: {method: adalora, ...}``).

>>> AdaLoraOptions().target_r
8
"""

from __future__ import annotations

from pydantic import Field

from ..options import Literal, MethodOptions, method_field, targets_field


class AdaLoraOptions(MethodOptions):
    """AdaLoRA: LoRA in SVD form whose rank budget is re-allocated while it trains."""

    method: Literal["adalora"] = method_field("adalora")
    init_r: int = Field(12, ge=1, description="starting rank of every layer")
    target_r: int = Field(8, ge=1, description="average rank left after budgeting")
    tinit: int = Field(0, ge=0, description="steps before the rank budget starts to shrink")
    tfinal: int = Field(0, ge=0, description="last steps trained at the final budget")
    deltaT: int = Field(1, ge=1, description="steps between two budget allocations")
    alpha: float = Field(32.0, gt=0, description="scaling numerator (PEFT's lora_alpha)")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the adapter input")
    target_modules: str | list[str] = targets_field()
