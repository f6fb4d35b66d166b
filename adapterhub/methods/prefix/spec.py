"""Prefix tuning: its config and weights, the geometry a base imposes, how a recipe asks for one.

PEFT stores one tensor, ``prompt_embeddings`` ``[tokens, layers * 2 * token_dim]``,
where ``token_dim`` is the base's key (or value) width per layer — KV heads ×
head size for grouped-query attention. Row ``t`` is read as
``view(layers * 2, kv_heads, head_dim)``: layer-major, then key/value, then head.

>>> PREFIX.title
'prefix tuning'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..._transformers import cache_layers, cache_of, kv_geometry
from ...errors import IncompatibleBaseError, InvalidAdapterError, RecipeError
from ..checks import config_problem
from ..spec import MethodBase

WEIGHTS_KEY = "prompt_embeddings"


def prefix_dims(model_config: Any) -> tuple[int, int]:
    """``(num_layers, token_dim)`` that PEFT prefix tuning uses for a transformers config (KV width for GQA)."""
    geometry = kv_geometry(model_config)
    return geometry.layers, geometry.token_dim


@dataclass(frozen=True)
class PrefixSpec(MethodBase):
    name: str = "prefix"
    peft_type: str = "PREFIX_TUNING"
    title: str = "prefix tuning"
    summary: str = "learned key/value prefix per layer"
    options_class: str = "PrefixOptions"

    def check_files(self, config: Mapping[str, Any], tensor_shapes: Mapping[str, tuple[int, ...]], *,
                    where: str) -> None:
        problems = [problem for problem in (
            *(config_problem(config, key, "int", required=True, minimum=1)
              for key in ("num_virtual_tokens", "num_layers", "token_dim", "num_attention_heads")),
            config_problem(config, "num_transformer_submodules", "int", minimum=1),
            config_problem(config, "prefix_projection", "bool")) if problem]
        if problems:
            raise InvalidAdapterError(f"adapter_config.json beside {where} is not a usable prefix-tuning config: "
                                      f"{'; '.join(problems)}; fix the values or save the adapter again with PEFT")
        if WEIGHTS_KEY not in tensor_shapes:
            raise InvalidAdapterError(f"{where} has no {WEIGHTS_KEY} tensor although adapter_config.json says "
                                      "method 'prefix'; the config and weights do not belong together")

    def check_fits(self, config: Mapping[str, Any], tensor_shapes: Mapping[str, tuple[int, ...]],
                   base: Any) -> None:
        num_layers, token_dim = prefix_dims(base.model.config)
        for field, want in (("num_layers", num_layers), ("token_dim", token_dim)):
            if config.get(field) != want:
                raise IncompatibleBaseError(
                    f"prefix adapter has {field}={config.get(field)} but this base needs {field}={want}; "
                    "the adapter was made for a different architecture")
        shape = tuple(tensor_shapes.get(WEIGHTS_KEY, ()))
        width = num_layers * 2 * token_dim
        if len(shape) != 2 or shape[1] != width:
            raise IncompatibleBaseError(f"prefix adapter tensor {WEIGHTS_KEY} has shape {shape} but this base needs "
                                        f"(num_virtual_tokens, {width}) = (n, num_layers*2*token_dim)")

    def settings(self, config: Mapping[str, Any]) -> str:
        tokens = config.get("num_virtual_tokens")
        return f"{tokens} virtual tokens" if tokens else ""

    def recipe_problems(self, recipe: Any) -> list[str]:
        problems = []
        if recipe.base.quantize is not None:
            problems.append("adapter.method 'prefix' cannot train on a quantized base (QLoRA is a LoRA technique); "
                            "set base.quantize: none or adapter.method: lora")
        if recipe.adapter.prefix_init_text is not None and recipe.adapter.prefix_projection:
            problems.append("adapter.prefix_init_text needs adapter.prefix_projection: false")
        if recipe.training.gradient_checkpointing:
            problems.append("training.gradient_checkpointing does not work with prefix tuning (transformers drops "
                            "the key/value cache that carries the prefix); set it to false")
        if recipe.data.packing:
            problems.append("data.packing does not work with prefix tuning (the prefix is shared per row); "
                            "set data.packing: false")
        return problems

    def peft_config(self, recipe: Any, base: Any) -> Any:
        from peft import PrefixTuningConfig

        section = recipe.adapter
        return PrefixTuningConfig(num_virtual_tokens=section.num_virtual_tokens, task_type="CAUSAL_LM",
                                  prefix_projection=section.prefix_projection,
                                  encoder_hidden_size=base.spec.hidden_size)

    def initialise(self, peft_model: Any, tokenizer: Any, recipe: Any) -> None:
        if recipe.adapter.prefix_init_text is not None:
            init_prefix_from_text(peft_model, tokenizer, recipe.adapter.prefix_init_text)

    def random_config(self, common: Mapping[str, Any], options: Mapping[str, Any]) -> Any:
        from peft import PrefixTuningConfig

        return PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=common["num_virtual_tokens"], **options)


def init_prefix_from_text(peft_model: Any, tokenizer: Any, text: str) -> None:
    """Overwrite a prefix-tuning adapter's prefix with the base's keys/values for ``text``.

    The text is tokenized and cut (or repeated) to ``num_virtual_tokens`` tokens.
    PEFT initialises a prefix at random, which first garbles the frozen model;
    with few examples much of the budget goes to undoing that. Started as the
    keys and values the base computes for a task description, training starts
    from a model that behaves exactly as if that text were in its context
    (Li & Liang, 2021, §7.2: "initialising with real words" helps most with little data).

    Args:
        peft_model: a ``PeftModel`` with a prefix-tuning adapter (no ``prefix_projection``).
        tokenizer: the base tokenizer.
        text: any text; a task description works well.

    Raises:
        RecipeError: the text is empty or the adapter is not a plain prefix.

    >>> init_prefix_from_text(peft_model, tokenizer, "Classify the clause type.")  # doctest: +SKIP
    """
    import torch

    config = peft_model.active_peft_config
    if config.peft_type != "PREFIX_TUNING" or config.prefix_projection:
        raise RecipeError("adapter.prefix_init_text needs adapter.method 'prefix' without prefix_projection")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise RecipeError("adapter.prefix_init_text is empty; give a task description or set it to null")
    length = config.num_virtual_tokens
    ids = (ids * (length // len(ids) + 1))[:length]
    body = peft_model.get_base_model().get_decoder()
    embedding = peft_model.prompt_encoder[peft_model.active_adapter].embedding.weight  # [tokens, layers*2*kv_dim]
    with torch.no_grad():
        cache = cache_of(body(input_ids=torch.tensor([ids], device=embedding.device), use_cache=True))
        per_layer = [torch.stack([layer.keys[0], layer.values[0]]) for layer in cache_layers(cache)]
        stacked = torch.stack(per_layer)  # [layers, 2, heads, tokens, dim]
        embedding.copy_(stacked.permute(3, 0, 1, 2, 4).reshape(length, -1).to(embedding.dtype))


PREFIX = PrefixSpec()
