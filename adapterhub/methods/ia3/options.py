"""IA³'s recipe options (``adapter: {method: ia3, ...}``).

>>> IA3Options().target_modules
'all-linear'
"""

from __future__ import annotations

from pydantic import Field

from ..options import Literal, MethodOptions, method_field, targets_field


class IA3Options(MethodOptions):
    """IA³: learned vectors that rescale keys, values and the feed-forward input."""

    method: Literal["ia3"] = method_field("ia3")
    target_modules: str | list[str] = targets_field(note="; all-linear = IA³'s own k_proj, v_proj, down_proj")
    feedforward_modules: list[str] | None = Field(
        None, description="targets whose input (not output) is scaled; null = down_proj when targeted")
