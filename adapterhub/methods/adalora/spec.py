"""AdaLoRA: LoRA in SVD form whose rank budget is re-allocated while it trains.

PEFT keeps, per targeted linear layer, ``lora_A`` ``[r, in]`` (right singular
vectors), ``lora_E`` ``[r, 1]`` (singular values) and ``lora_B`` ``[out, r]``
(left singular vectors), keyed without ``.weight``::

    base_model.model.model.layers.0.self_attn.q_proj.lora_E

Training starts every layer at ``init_r`` and, from step ``tinit`` to
``total_step - tfinal``, prunes singular triplets by importance every ``deltaT``
steps until the average rank is ``target_r``; the trainer calls PEFT's
``update_and_allocate`` after each optimizer step (:class:`AdaLoraHook`) and adds
the orthogonality penalty PEFT's own forward would add. The saved adapter keeps
only the surviving triplets (``rank_pattern`` in ``adapter_config.json``), so each
layer's stored rank is its final budget. Its output is
``x @ (A * E).T @ B.T * scaling / (init_r + 1e-5)`` with ``scaling = lora_alpha``.

>>> parse_key("base_model.model.model.layers.1.mlp.up_proj.lora_E")
('model.layers.1.mlp.up_proj', 'lora_E')
>>> ADALORA.peft_type
'ADALORA'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..._transformers import strip_peft_prefix
from ...errors import IncompatibleBaseError, InvalidAdapterError, RecipeError
from ..checks import adapted_linears, rank_settings
from ..spec import MethodBase

_KEY = re.compile(r"^(?P<module>.+)\.(?P<kind>lora_A|lora_B|lora_E)$")


def parse_key(key: str) -> tuple[str, str] | None:
    """``(module, kind)`` of an AdaLoRA weight key (kind: ``lora_A``, ``lora_B``, ``lora_E``), else ``None``."""
    match = _KEY.match(strip_peft_prefix(key))
    return None if match is None else (match["module"], match["kind"])


def ranks(tensor_shapes: Mapping[str, tuple[int, ...]]) -> dict[str, int]:
    """The budgeted rank each module kept (rows of its ``lora_E``), by module name.

    >>> ranks({"base_model.model.m.q_proj.lora_E": (3, 1), "base_model.model.m.v_proj.lora_E": (0, 1)})
    {'m.q_proj': 3, 'm.v_proj': 0}
    """
    found = {}
    for key, shape in tensor_shapes.items():
        parsed = parse_key(key)
        if parsed is not None and parsed[1] == "lora_E":
            found[parsed[0]] = int(shape[0]) if shape else 0
    return found


@dataclass(frozen=True)
class AdaLoraSpec(MethodBase):
    name: str = "adalora"
    peft_type: str = "ADALORA"
    title: str = "AdaLoRA"
    summary: str = "LoRA with a learned rank budget"
    options_class: str = "AdaLoraOptions"
    mixable: bool = True
    noise_std: float = 0.1

    def check_files(self, config: Mapping[str, Any], tensor_shapes: Mapping[str, tuple[int, ...]], *,
                    where: str) -> None:
        if not ranks(tensor_shapes):
            raise InvalidAdapterError(f"{where} has no lora_E tensors although adapter_config.json says method "
                                      "'adalora'; the config and weights do not belong together")
        if not config.get("init_r"):
            raise InvalidAdapterError(f"{where}: adapter_config.json of an AdaLoRA adapter needs init_r (its ranknum); "
                                      "save it again with PEFT's save_pretrained")

    def check_fits(self, config: Mapping[str, Any], tensor_shapes: Mapping[str, tuple[int, ...]],
                   base: Any) -> None:
        for key, shape, (module, kind), in_features, out_features in adapted_linears(tensor_shapes, base, parse_key):
            if kind == "lora_A" and (len(shape) != 2 or shape[1] != in_features):
                raise IncompatibleBaseError(f"adapter tensor {key} has shape {tuple(shape)} but base module {module} "
                                            f"has in_features={in_features}; it belongs to another architecture")
            if kind == "lora_B" and (len(shape) != 2 or shape[0] != out_features):
                raise IncompatibleBaseError(f"adapter tensor {key} has shape {tuple(shape)} but base module {module} "
                                            f"has out_features={out_features}; it belongs to another architecture")

    def settings(self, config: Mapping[str, Any]) -> str:
        return rank_settings(config, init_r="init_r", target_r="target_r", alpha="lora_alpha")

    def recipe_problems(self, recipe: Any) -> list[str]:
        adapter, problems = recipe.adapter, []
        if adapter.target_r > adapter.init_r:
            problems.append(f"adapter.target_r ({adapter.target_r}) must not exceed adapter.init_r ({adapter.init_r})")
        if recipe.training.max_steps is not None and adapter.tinit + adapter.tfinal >= recipe.training.max_steps:
            problems.append(f"adapter.tinit + adapter.tfinal ({adapter.tinit} + {adapter.tfinal}) leave no budgeting "
                            f"steps of training.max_steps={recipe.training.max_steps}; lower them")
        return problems

    def peft_config(self, recipe: Any, base: Any) -> Any:
        from peft import AdaLoraConfig

        adapter = recipe.adapter
        # PEFT needs total_step up front; the hook sets the real count once the data is planned
        total = recipe.training.max_steps or adapter.tinit + adapter.tfinal + 1
        return AdaLoraConfig(init_r=adapter.init_r, target_r=adapter.target_r, tinit=adapter.tinit,
                             tfinal=adapter.tfinal, deltaT=adapter.deltaT, lora_alpha=adapter.alpha,
                             lora_dropout=adapter.dropout, target_modules=adapter.target_modules,
                             total_step=total, task_type="CAUSAL_LM")

    def random_config(self, common: Mapping[str, Any], options: Mapping[str, Any]) -> Any:
        from peft import AdaLoraConfig

        r = common["r"]
        return AdaLoraConfig(task_type="CAUSAL_LM", init_r=r, target_r=max(1, r // 2),
                             lora_alpha=common["lora_alpha"] or 2 * r, target_modules=list(common["target_modules"]),
                             total_step=10, **options)

    def random_weights(self, peft_model: Any, generator: Any, std: float | None) -> None:
        """Noise, then a budget: every layer keeps a random subset of its triplets (the first none)."""
        super().random_weights(peft_model, generator, std)
        import torch

        config = peft_model.peft_config["default"]
        pattern = {}
        for name, parameter in peft_model.base_model.model.named_parameters():
            if name.endswith("lora_E.default"):
                keep = torch.rand(parameter.shape[0], generator=generator) < 0.6
                keep &= bool(pattern)  # the first layer's budget is spent entirely: rank 0
                pattern[name.removesuffix(".default")] = keep.tolist()
        config.rank_pattern = pattern

    def training_hook(self, peft_model: Any, recipe: Any, total_steps: int) -> AdaLoraHook:
        """The per-step work PEFT asks of an AdaLoRA training loop (see :class:`AdaLoraHook`)."""
        return AdaLoraHook(peft_model, recipe, total_steps)


class AdaLoraHook:
    """Budget allocation after every optimizer step, and PEFT's orthogonality penalty in the loss.

    Args:
        peft_model: the ``PeftModel`` holding the AdaLoRA adapter being trained.
        recipe: the recipe (``adapter.tinit``/``tfinal`` are checked against ``total_steps``).
        total_steps: optimizer steps this run takes.

    Raises:
        RecipeError: the schedule leaves no budgeting phase.

    >>> hook = AdaLoraHook(peft_model, recipe, total_steps=64)  # doctest: +SKIP
    >>> loss = loss + hook.extra_loss(); hook.after_step(1)  # doctest: +SKIP
    """

    def __init__(self, peft_model: Any, recipe: Any, total_steps: int) -> None:
        adapter = recipe.adapter
        if adapter.tinit >= total_steps - adapter.tfinal:
            raise RecipeError(f"adapter.tinit ({adapter.tinit}) + adapter.tfinal ({adapter.tfinal}) leave no budgeting "
                              f"phase in this run's {total_steps} steps; lower them or train longer")
        self.model = peft_model.base_model  # AdaLoraModel
        self.model.peft_config[self.model.trainable_adapter_name].total_step = total_steps
        self.weight = float(self.model.peft_config[self.model.trainable_adapter_name].orth_reg_weight)

    def extra_loss(self) -> Any:
        """``orth_reg_weight`` times the mean ``||P Pᵀ - I||_F`` over every ``lora_A`` / ``lora_B`` (as PEFT adds it)."""
        import torch

        name, terms = self.model.trainable_adapter_name, []
        for key, param in self.model.model.named_parameters():
            if ("lora_A" in key or "lora_B" in key) and name in key and param.requires_grad:
                cov = param @ param.T if "lora_A" in key else param.T @ param
                terms.append(torch.norm(cov - torch.eye(*cov.shape, dtype=cov.dtype, device=cov.device), p="fro"))
        return self.weight * torch.stack(terms).mean() if terms else None

    def after_step(self, step: int) -> None:
        """Update importance scores and prune to this step's budget (``step`` counts from 1); before ``zero_grad``."""
        self.model.update_and_allocate(step)


ADALORA = AdaLoraSpec()
