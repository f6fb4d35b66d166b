"""The bottleneck method's recipe options (``adapter: {method: bottleneck, ...}``).

>>> BottleneckOptions().placement
'houlsby'
"""

from __future__ import annotations

from pydantic import Field

from ..options import Literal, MethodOptions, method_field


class BottleneckOptions(MethodOptions):
    """Bottleneck adapters after attention and/or feed-forward outputs (adapterhub's own format)."""

    method: Literal["bottleneck"] = method_field("bottleneck")
    placement: str = Field("houlsby", description="houlsby (after attention and feed-forward) or pfeiffer "
                                                  "(after feed-forward only)")
    reduction_factor: int = Field(16, ge=1, description="bottleneck width = hidden size / reduction_factor")
    non_linearity: str = Field("relu", description="relu, gelu, silu or tanh inside the bottleneck")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the adapter input while training")
