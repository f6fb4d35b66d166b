"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2020): adapterhub's own method.

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

from .._transformers import strip_peft_prefix
from ..errors import IncompatibleBaseError, InvalidAdapterError

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


@dataclass(frozen=True)
class BottleneckSpec:
    name: str = "bottleneck"
    peft_type: str = PEFT_TYPE
    title: str = "bottleneck"

    def check_files(self, config: Mapping[str, Any], tensor_shapes: Mapping[str, tuple[int, ...]], *,
                    where: str) -> None:
        parts: dict[str, set[str]] = {}
        for key in tensor_shapes:
            parsed = parse_key(key)
            if parsed is not None:
                parts.setdefault(parsed[0], set()).add(f"{parsed[1]}.{parsed[2]}")
        if not parts:
            raise InvalidAdapterError(f"{where} has no bottleneck tensors although adapter_config.json says method "
                                      "'bottleneck'; the config and weights do not belong together")
        for module, found in parts.items():
            if found != {"down.weight", "down.bias", "up.weight", "up.bias"}:
                raise InvalidAdapterError(f"{where}: the bottleneck at {module!r} has {sorted(found)}; it needs "
                                          "down.weight, down.bias, up.weight and up.bias")
        try:
            BottleneckConfig.from_dict(config)
        except (TypeError, InvalidAdapterError) as error:
            raise InvalidAdapterError(f"{where}: adapter_config.json is not a valid bottleneck config ({error}); "
                                      "save the adapter again with adapterhub") from None

    def check_fits(self, config: Mapping[str, Any], tensor_shapes: Mapping[str, tuple[int, ...]],
                   base: Any) -> None:
        linear = base.linear_shapes
        for key, shape in tensor_shapes.items():
            parsed = parse_key(key)
            if parsed is None:
                continue
            module, part, kind = parsed
            if module not in linear:
                raise IncompatibleBaseError(f"adapter adapts module {module!r}, which this base does not have; "
                                            "use the base the adapter was made for")
            width = linear[module][1]  # the adapter reads and writes the module's output
            if kind == "weight":
                ok = len(shape) == 2 and shape[1 if part == "down" else 0] == width
            else:
                ok = len(shape) == 1 and (part == "down" or shape[0] == width)
            if not ok:
                raise IncompatibleBaseError(f"adapter tensor {key} has shape {tuple(shape)} but base module {module} "
                                            f"has out_features={width}; it belongs to another architecture")

    def settings(self, config: Mapping[str, Any]) -> str:
        if not config.get("placement"):
            return ""
        return (f"{config['placement']}, reduction_factor={config.get('reduction_factor')}, "
                f"bottleneck={config.get('bottleneck_size')}, {config.get('non_linearity')}")

    def recipe_problems(self, recipe: Any) -> list[str]:
        adapter, problems = recipe.adapter, []
        if adapter.placement not in PLACEMENTS:
            problems.append(f"adapter.placement {adapter.placement!r}: use one of {', '.join(PLACEMENTS)}")
        if adapter.non_linearity not in NON_LINEARITIES:
            problems.append(f"adapter.non_linearity {adapter.non_linearity!r}: use one of {', '.join(NON_LINEARITIES)}")
        if adapter.use_dora or adapter.use_rslora:
            problems.append("adapter.use_dora / use_rslora are LoRA options; set them to false for method 'bottleneck'")
        return problems

    def peft_config(self, recipe: Any, base: Any) -> BottleneckConfig:
        adapter = recipe.adapter
        return BottleneckConfig(hidden_size=base.spec.hidden_size, reduction_factor=adapter.reduction_factor,
                                placement=adapter.placement, non_linearity=adapter.non_linearity,
                                dropout=adapter.dropout, base_model_name_or_path=base.spec.name)

    def build_model(self, model: Any, recipe: Any, base: Any) -> Any:
        """The trainable wrapper: fresh adapters injected into ``model`` (see :mod:`.bottleneck_model`)."""
        from .bottleneck_model import BottleneckModel

        return BottleneckModel(model, self.peft_config(recipe, base))

    def attach(self, model: Any, config: Mapping[str, Any], tensors: Mapping[str, Any]) -> Any:
        """A wrapper over ``model`` holding stored weights (for evaluation); ``unload()`` removes it."""
        from .bottleneck_model import BottleneckModel

        wrapper = BottleneckModel(model, BottleneckConfig.from_dict(config))
        wrapper.load_adapter_state_dict(tensors)
        return wrapper.eval()

    def initialise(self, peft_model: Any, tokenizer: Any, recipe: Any) -> None:
        return None


BOTTLENECK = BottleneckSpec()
