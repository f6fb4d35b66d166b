"""What every method's recipe options share: the pydantic base of each ``<method>/options.py``.

A recipe's ``adapter:`` section is one of these models, chosen by its ``method`` key (a pydantic union
discriminated on ``method``, built from the registry by :mod:`adapterhub.training.recipe`): unknown keys
are errors, and messages and ``adapterhub recipe new --method NAME`` list only that method's options.

>>> class Demo(MethodOptions):
...     method: Literal["demo"] = method_field("demo")
>>> Demo().method
'demo'
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Literal", "MethodOptions", "method_field", "targets_field"]


class MethodOptions(BaseModel):
    """The trainable adapter: its method and that method's options (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    method: str


def method_field(name: str) -> Any:
    """The ``method`` key of a method's options: ``Literal[name]``, defaulting to it."""
    return Field(name, description="the adapter method; `adapterhub recipe new --method NAME` lists the options "
                                   "of another (README: Adapter methods)")


def targets_field(default: str | list[str] = "all-linear", *, note: str = "") -> Any:
    """``target_modules``: module names to adapt, or ``all-linear``."""
    return Field(default, description="module names to adapt (e.g. [q_proj, v_proj]) or 'all-linear'" + note)
