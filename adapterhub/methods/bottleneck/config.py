"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2020): adapterhub's own method, its config and keys.

A small two-layer network is added, with a residual connection, to the output
of a block's sublayer: ``h + up(act(down(h)))``, ``down`` ``[b, H]``, ``up``
``[H, b]``, ``b = H // reduction_factor``. ``up`` starts at zero, so a fresh
adapter is the identity.

* ``houlsby``: two per transformer block — after the attention output
  projection (``o_proj``) and after the feed-forward output projection (``down_proj``);
* ``pfeiffer``: one per block, after the feed-forward output projection.

PEFT has no such method, so plain PEFT cannot load these adapters (adapterhub,
its registry, Hub exchange and runtime can). They are stored the PEFT way: an
``adapter_config.json`` and an ``adapter_model.safetensors``::

    {"peft_type": "ADAPTERHUB_BOTTLENECK", "format_version": 1, "placement": "houlsby",
     "target_modules": ["o_proj", "down_proj"], "reduction_factor": 16, "bottleneck_size": 36,
     "hidden_size": 576, "non_linearity": "relu", "task_type": "CAUSAL_LM", "base_model_name_or_path": "..."}

    base_model.model.model.layers.0.mlp.down_proj.bottleneck.down.weight   [b, H]
    base_model.model.model.layers.0.mlp.down_proj.bottleneck.down.bias     [b]
    base_model.model.model.layers.0.mlp.down_proj.bottleneck.up.weight     [H, b]
    base_model.model.model.layers.0.mlp.down_proj.bottleneck.up.bias       [H]

The key names the linear layer whose output the adapter reads and adds to.

>>> parse_key("base_model.model.model.layers.0.mlp.down_proj.bottleneck.up.bias")
('model.layers.0.mlp.down_proj', 'up', 'bias')
>>> placement_modules("pfeiffer")
('down_proj',)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ..._transformers import strip_peft_prefix
from ...errors import InvalidAdapterError

PEFT_TYPE = "ADAPTERHUB_BOTTLENECK"
FORMAT_VERSION = 1
PLACEMENTS = {"houlsby": ("o_proj", "down_proj"), "pfeiffer": ("down_proj",)}
NON_LINEARITIES = ("relu", "gelu", "silu", "tanh")
_KEY = re.compile(r"^(?P<module>.+)\.bottleneck\.(?P<part>down|up)\.(?P<kind>weight|bias)$")


def parse_key(key: str) -> tuple[str, str, str] | None:
    """``(module, "down"|"up", "weight"|"bias")`` of a bottleneck weight key, else ``None``."""
    match = _KEY.match(strip_peft_prefix(key))
    return None if match is None else (match["module"], match["part"], match["kind"])


def placement_modules(placement: str) -> tuple[str, ...]:
    """The module names (suffixes) whose outputs a placement adapts.

    Raises:
        InvalidAdapterError: an unknown placement.
    """
    if placement not in PLACEMENTS:
        raise InvalidAdapterError(f"unknown bottleneck placement {placement!r}; use one of {', '.join(PLACEMENTS)}")
    return PLACEMENTS[placement]


@dataclass
class BottleneckConfig:
    """The ``adapter_config.json`` of a bottleneck adapter (see the module docstring).

    >>> BottleneckConfig(hidden_size=64, reduction_factor=16).bottleneck_size
    4
    """

    hidden_size: int
    reduction_factor: int = 16
    placement: str = "houlsby"
    non_linearity: str = "relu"
    dropout: float = 0.0  # on the adapter's input while training (identity at inference)
    target_modules: list[str] = field(default_factory=list)  # default: the placement's modules
    base_model_name_or_path: str | None = None
    inference_mode: bool = False
    task_type: str = "CAUSAL_LM"
    peft_type: str = PEFT_TYPE
    format_version: int = FORMAT_VERSION
    is_prompt_learning = False  # not a field: PEFT-style attribute the trainer and evaluation read

    def __post_init__(self) -> None:
        if not self.target_modules:
            self.target_modules = list(placement_modules(self.placement))
        if self.non_linearity not in NON_LINEARITIES:
            raise InvalidAdapterError(f"unknown non_linearity {self.non_linearity!r}; use one of "
                                      f"{', '.join(NON_LINEARITIES)}")

    @property
    def bottleneck_size(self) -> int:
        """``max(1, hidden_size // reduction_factor)``."""
        return max(1, self.hidden_size // self.reduction_factor)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "bottleneck_size": self.bottleneck_size}

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> BottleneckConfig:
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{key: value for key, value in config.items() if key in known})

    def save_pretrained(self, directory: str) -> None:
        """Write ``adapter_config.json`` into ``directory`` (as PEFT configs do)."""
        import json
        from pathlib import Path

        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        (path / "adapter_config.json").write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
