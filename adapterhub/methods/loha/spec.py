"""LoHa (low-rank Hadamard product, LyCORIS; PEFT's ``LoHaConfig``): its config and weights, fit to a base, recipe.

PEFT keeps four factors per targeted linear layer, keyed without ``.weight``::

    base_model.model.model.layers.0.self_attn.q_proj.hada_w1_a    [out, r]
    base_model.model.model.layers.0.self_attn.q_proj.hada_w1_b    [r, in]
    base_model.model.model.layers.0.self_attn.q_proj.hada_w2_a    [out, r]
    base_model.model.model.layers.0.self_attn.q_proj.hada_w2_b    [r, in]

and adds ``x @ dW.T`` with ``dW = (w1_a @ w1_b) * (w2_a @ w2_b) * alpha / r`` (``*``: element-wise), so
the update's rank reaches ``r²`` for ``2 r (in + out)`` numbers. ``r`` and ``alpha`` per module follow
``rank_pattern`` / ``alpha_pattern``. Convolution factors (``hada_t1``, ``hada_t2``) are not served.

>>> parse_key("base_model.model.model.layers.0.mlp.up_proj.hada_w2_b")
('model.layers.0.mlp.up_proj', 'hada_w2_b')
>>> LOHA.title
'LoHa'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..._transformers import strip_peft_prefix
from ...errors import IncompatibleBaseError, InvalidAdapterError
from ..checks import adapted_linears, config_problem, module_alpha, rank_settings
from ..spec import MethodBase

FACTORS = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
_KEY = re.compile(r"^(?P<module>.+)\.(?P<kind>hada_w[12]_[ab]|hada_t[12])$")


def parse_key(key: str) -> tuple[str, str] | None:
    """``(module, factor)`` of a LoHa weight key, else ``None``."""
    match = _KEY.match(strip_peft_prefix(key))
    return None if match is None else (match["module"], match["kind"])


def scaling(config: Mapping[str, Any], module: str, rank: int) -> float:
    """``alpha / r`` of ``module``: the first matching ``alpha_pattern`` key's alpha, else ``alpha``.

    >>> scaling({"alpha": 8, "alpha_pattern": {"q_proj": 4}}, "model.layers.0.self_attn.q_proj", 2)
    2.0
    """
    return module_alpha(config, module, key="alpha") / rank


@dataclass(frozen=True)
class LohaSpec(MethodBase):
    name: str = "loha"
    peft_type: str = "LOHA"
    title: str = "LoHa"
    summary: str = "Hadamard product of two low-rank updates"
    options_class: str = "LohaOptions"
    noise_std: float = 0.3

    def check_files(self, config: Mapping[str, Any], tensor_shapes: Mapping[str, tuple[int, ...]], *,
                    where: str) -> None:
        problems = [problem for problem in (
            config_problem(config, "r", "int", minimum=1, nullable=False),
            config_problem(config, "alpha", "number", nullable=False),
            config_problem(config, "use_effective_conv2d", "bool")) if problem]
        if config.get("modules_to_save"):
            problems.append("modules_to_save (full module copies) is not served")
        if problems:
            raise InvalidAdapterError(f"adapter_config.json beside {where} is not a usable LoHa config: "
                                      f"{'; '.join(problems)}; fix the values or save the adapter again with PEFT")
        factors: dict[str, set[str]] = {}
        for key in tensor_shapes:
            parsed = parse_key(key)
            if parsed is not None:
                factors.setdefault(parsed[0], set()).add(parsed[1])
        if not factors:
            raise InvalidAdapterError(f"{where} has no hada_w1_a tensors although adapter_config.json says method "
                                      "'loha'; the config and weights do not belong together")
        for module, found in factors.items():
            if found != set(FACTORS):
                raise InvalidAdapterError(f"{where}: LoHa module {module!r} has {sorted(found)}; adapterhub serves "
                                          f"linear layers with exactly {', '.join(FACTORS)}")

    def check_fits(self, config: Mapping[str, Any], tensor_shapes: Mapping[str, tuple[int, ...]],
                   base: Any) -> None:
        for key, shape, (module, factor), in_features, out_features in adapted_linears(tensor_shapes, base, parse_key):
            side, want, got = (("out_features", out_features, shape[0]) if factor.endswith("_a") else
                               ("in_features", in_features, shape[-1]))
            if len(shape) != 2 or got != want:
                raise IncompatibleBaseError(f"adapter tensor {key} has shape {tuple(shape)} but base module {module} "
                                            f"has {side}={want}; the adapter was made for a different architecture")

    def settings(self, config: Mapping[str, Any]) -> str:
        return rank_settings(config, r="r", alpha="alpha")

    def recipe_problems(self, recipe: Any) -> list[str]:
        if recipe.base.quantize is not None:
            return ["adapter.method 'loha' trains on full-precision linear layers only; set base.quantize: none "
                    "(or adapter.method: lora for QLoRA)"]
        return []

    def peft_config(self, recipe: Any, base: Any) -> Any:
        from peft import LoHaConfig

        adapter = recipe.adapter
        return LoHaConfig(r=adapter.r, alpha=adapter.alpha, rank_dropout=adapter.rank_dropout,
                          module_dropout=adapter.module_dropout, target_modules=adapter.target_modules,
                          task_type="CAUSAL_LM")

    def random_config(self, common: Mapping[str, Any], options: Mapping[str, Any]) -> Any:
        from peft import LoHaConfig

        r = common["r"]
        return LoHaConfig(task_type="CAUSAL_LM", r=r, alpha=common["lora_alpha"] or 2 * r,
                          target_modules=list(common["target_modules"]), **options)


LOHA = LohaSpec()
