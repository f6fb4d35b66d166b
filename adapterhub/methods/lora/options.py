"""LoRA's recipe options (``adapter: {method: lora, ...}``).

>>> LoraOptions(r=4).alpha
32.0
"""

from __future__ import annotations

from pydantic import Field

from ..options import Literal, MethodOptions, method_field, targets_field


class LoraOptions(MethodOptions):
    """LoRA: a low-rank update ``B @ A`` of each targeted linear layer (DoRA / rsLoRA as flags)."""

    method: Literal["lora"] = method_field("lora")
    r: int = Field(16, ge=1, description="LoRA rank")
    alpha: float = Field(32.0, gt=0, description="LoRA scaling numerator (scale = alpha / r, or alpha / sqrt(r))")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the LoRA input")
    target_modules: str | list[str] = targets_field()
    last_layers: int | None = Field(
        None, ge=1, description="adapt only the last N decoder layers: the layers below stay as the base has "
                                "them, so training runs them once per row and backpropagates through N layers "
                                "only; null = every layer")
    use_dora: bool = Field(False, description="DoRA: weight-decomposed LoRA")
    use_rslora: bool = Field(False, description="rsLoRA: scale by alpha / sqrt(r)")
