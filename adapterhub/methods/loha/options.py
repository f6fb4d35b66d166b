"""LoHa's recipe options (``adapter: {method: loha, ...}``), PEFT's ``LoHaConfig`` defaults.

>>> LohaOptions().r, LohaOptions().alpha
(8, 8.0)
"""

from __future__ import annotations

from pydantic import Field

from ..options import Literal, MethodOptions, method_field, targets_field


class LohaOptions(MethodOptions):
    """LoHa: each targeted linear layer's update is the Hadamard product of two low-rank products."""

    method: Literal["loha"] = method_field("loha")
    r: int = Field(8, ge=1, description="rank of each of the two low-rank products")
    alpha: float = Field(8.0, gt=0, description="scaling numerator (scale = alpha / r)")
    rank_dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the update's output rows while training")
    module_dropout: float = Field(0.0, ge=0, lt=1, description="probability of skipping a layer's update while "
                                                               "training")
    target_modules: str | list[str] = targets_field()
