"""The bottleneck method's spec: validity, fit to a base, recipe checks, training wrapper (see :mod:`.config`).

>>> BOTTLENECK.peft_loads
False
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...errors import IncompatibleBaseError, InvalidAdapterError
from ..checks import adapted_linears
from ..spec import MethodBase
from .config import NON_LINEARITIES, PEFT_TYPE, PLACEMENTS, BottleneckConfig, parse_key


@dataclass(frozen=True)
class BottleneckSpec(MethodBase):
    name: str = "bottleneck"
    peft_type: str = PEFT_TYPE
    title: str = "bottleneck"
    summary: str = "Houlsby/Pfeiffer adapters; adapterhub only, plain PEFT cannot load them"
    options_class: str = "BottleneckOptions"
    peft_loads: bool = False

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
        for key, shape, (module, part, kind), _, width in adapted_linears(tensor_shapes, base, parse_key):
            # the adapter reads and writes the module's output (width = out_features)
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
        return problems

    def peft_config(self, recipe: Any, base: Any) -> BottleneckConfig:
        adapter = recipe.adapter
        return BottleneckConfig(hidden_size=base.spec.hidden_size, reduction_factor=adapter.reduction_factor,
                                placement=adapter.placement, non_linearity=adapter.non_linearity,
                                dropout=adapter.dropout, base_model_name_or_path=base.spec.name)

    def build_model(self, model: Any, recipe: Any, base: Any) -> Any:
        """The trainable wrapper: fresh adapters injected into ``model`` (see :mod:`.model`)."""
        from .model import BottleneckModel

        return BottleneckModel(model, self.peft_config(recipe, base))

    def attach(self, model: Any, config: Mapping[str, Any], tensors: Mapping[str, Any]) -> Any:
        """A wrapper over ``model`` holding stored weights (for evaluation); ``unload()`` removes it."""
        from .model import BottleneckModel

        wrapper = BottleneckModel(model, BottleneckConfig.from_dict(config))
        wrapper.load_adapter_state_dict(tensors)
        return wrapper.eval()

    def random_model(self, model: Any, common: Mapping[str, Any], options: Mapping[str, Any]) -> Any:
        from .model import BottleneckModel

        return BottleneckModel(model, BottleneckConfig(hidden_size=model.config.hidden_size, **options))

    def noise(self, name: str, parameter: Any, noise: Any, std: float | None) -> Any:
        return noise * (std or 0.2)


BOTTLENECK = BottleneckSpec()
