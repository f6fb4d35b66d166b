"""IA³: learned vectors that rescale activations — keys, values and the feed-forward input.

PEFT stores one ``ia3_l`` per targeted linear layer, keyed by module name::

    base_model.model.model.layers.0.self_attn.k_proj.ia3_l     [out, 1]  scales the layer's output
    base_model.model.model.layers.0.mlp.down_proj.ia3_l        [1, in]   scales its input (feed-forward)

``feedforward_modules`` in ``adapter_config.json`` says which layers scale their
input; the shape says the same. On llama PEFT's defaults are ``k_proj``,
``v_proj`` and ``down_proj`` (feed-forward): three vectors per block.

>>> parse_key("base_model.model.model.layers.0.mlp.down_proj.ia3_l")
'model.layers.0.mlp.down_proj'
>>> IA3.title
'IA³'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..._transformers import strip_peft_prefix
from ...errors import IncompatibleBaseError, InvalidAdapterError
from ..checks import adapted_linears
from ..spec import MethodBase

SUFFIX = ".ia3_l"
DEFAULT_TARGETS = ("k_proj", "v_proj", "down_proj")
DEFAULT_FEEDFORWARD = ("down_proj",)


def parse_key(key: str) -> str | None:
    """The module an ``ia3_l`` key scales, else ``None``."""
    key = strip_peft_prefix(key)
    return key[: -len(SUFFIX)] if key.endswith(SUFFIX) else None


def is_feedforward(shape: tuple[int, ...]) -> bool:
    """Whether a stored vector scales its layer's input (``[1, in]``) rather than its output (``[out, 1]``)."""
    return len(shape) == 2 and shape[0] == 1 and shape[1] != 1


@dataclass(frozen=True)
class IA3Spec(MethodBase):
    name: str = "ia3"
    peft_type: str = "IA3"
    title: str = "IA³"
    summary: str = "learned scaling vectors"
    options_class: str = "IA3Options"

    def check_files(self, config: Mapping[str, Any], tensor_shapes: Mapping[str, tuple[int, ...]], *,
                    where: str) -> None:
        if not any(parse_key(key) for key in tensor_shapes):
            raise InvalidAdapterError(f"{where} has no ia3_l tensors although adapter_config.json says method 'ia3'; "
                                      "the config and weights do not belong together")

    def check_fits(self, config: Mapping[str, Any], tensor_shapes: Mapping[str, tuple[int, ...]],
                   base: Any) -> None:
        for key, shape, module, in_features, out_features in adapted_linears(tensor_shapes, base, parse_key):
            if tuple(shape) not in ((1, in_features), (out_features, 1)):
                raise IncompatibleBaseError(f"adapter tensor {key} has shape {tuple(shape)} but base module {module} "
                                            f"needs (1, {in_features}) or ({out_features}, 1); it belongs to another "
                                            "architecture")

    def settings(self, config: Mapping[str, Any]) -> str:
        targets = config.get("target_modules")
        if not targets:
            return ""
        targets = ", ".join(sorted(targets)) if isinstance(targets, (list, tuple, set)) else targets
        feedforward = config.get("feedforward_modules")
        feedforward = ", ".join(sorted(feedforward)) if isinstance(feedforward, (list, tuple, set)) else feedforward
        return f"targets: {targets}; feed-forward (input scaled): {feedforward}"

    def recipe_problems(self, recipe: Any) -> list[str]:
        adapter, problems = recipe.adapter, []
        if adapter.feedforward_modules is not None and isinstance(adapter.target_modules, list):
            extra = sorted(set(adapter.feedforward_modules) - set(adapter.target_modules))
            if extra:
                problems.append(f"adapter.feedforward_modules {extra} must also be in adapter.target_modules")
        return problems

    def peft_config(self, recipe: Any, base: Any) -> Any:
        from peft import IA3Config

        adapter = recipe.adapter
        targets = adapter.target_modules
        if targets == "all-linear":  # IA³'s own default: keys, values and the feed-forward input
            targets = list(DEFAULT_TARGETS)
        feedforward = adapter.feedforward_modules
        if feedforward is None:
            feedforward = [name for name in DEFAULT_FEEDFORWARD if name in targets]
        return IA3Config(target_modules=targets, feedforward_modules=feedforward, task_type="CAUSAL_LM")

    def random_config(self, common: Mapping[str, Any], options: Mapping[str, Any]) -> Any:
        from peft import IA3Config

        targets = list(common["target_modules"])
        if common.get("all_linear"):
            targets = list(DEFAULT_TARGETS)
        options = {"feedforward_modules": [name for name in ("down_proj", "up_proj") if name in targets], **options}
        return IA3Config(task_type="CAUSAL_LM", target_modules=targets, **options)

    def noise(self, name: str, parameter: Any, noise: Any, std: float | None) -> Any:
        return 1 + noise * (std or 0.3)  # scales around 1


IA3 = IA3Spec()
