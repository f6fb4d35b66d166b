"""Prefix tuning's recipe options (``adapter: {method: prefix, ...}``).

>>> PrefixOptions().num_virtual_tokens
20
"""

from __future__ import annotations

from pydantic import Field

from ..options import Literal, MethodOptions, method_field


class PrefixOptions(MethodOptions):
    """Prefix tuning: learned keys and values in front of every layer's attention."""

    method: Literal["prefix"] = method_field("prefix")
    num_virtual_tokens: int = Field(20, ge=1, description="prefix length in tokens")
    prefix_projection: bool = Field(False, description="train the prefix through a small MLP")
    prefix_init_text: str | None = Field(
        None, description="start the prefix as the base's keys/values for this text, e.g. a task description; "
                          "null = random")
