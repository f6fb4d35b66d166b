"""LoRA: what its config and weights are, whether they fit a base, how a recipe asks for one.

PEFT saves one ``lora_A`` ``[r, in]`` and one ``lora_B`` ``[out, r]`` per
targeted linear layer (``lora_B.bias`` with ``lora_bias``, a
``lora_magnitude_vector`` ``[out]`` with DoRA), keyed by the module's name::

    base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight

>>> parse_key("base_model.model.model.layers.0.mlp.up_proj.lora_B.weight")
LoraKey(module='model.layers.0.mlp.up_proj', kind='lora_B', part='B')
>>> parse_key("base_model.model.lm_head.weight") is None
True
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

from ..._transformers import strip_peft_prefix
from ...errors import IncompatibleBaseError, InvalidAdapterError
from ..checks import config_problem, rank_settings
from ..spec import MethodBase

_KEY = re.compile(r"^(?P<module>.+)\.(?P<kind>lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_magnitude_vector)"
                  r"(?P<rest>(?:\.[^.]+)*)$")
_PARTS = {("lora_A", ".weight"): "A", ("lora_B", ".weight"): "B", ("lora_B", ".bias"): "bias",
          ("lora_magnitude_vector", ""): "magnitude", ("lora_magnitude_vector", ".weight"): "magnitude"}


class LoraKey(NamedTuple):
    """One LoRA weight key: the module it adapts, PEFT's kind, and the part the runtime serves."""

    module: str  # relative to the causal-LM model: "model.layers.0.self_attn.q_proj"
    kind: str  # lora_A | lora_B | lora_embedding_A | lora_embedding_B | lora_magnitude_vector
    part: str | None  # A | B | bias | magnitude; None for what the runtime does not serve


@lru_cache(maxsize=16384)  # the same few hundred keys in every adapter of a base: parsed once, not per check
def parse_key(key: str) -> LoraKey | None:
    """Split a PEFT LoRA weight key; ``None`` when it is not a LoRA weight."""
    match = _KEY.match(strip_peft_prefix(key))
    if match is None:
        return None
    return LoraKey(match["module"], match["kind"], _PARTS.get((match["kind"], match["rest"])))


@dataclass(frozen=True)
class LoraSpec(MethodBase):
    name: str = "lora"
    peft_type: str = "LORA"
    title: str = "LoRA"
    summary: str = "low-rank update; DoRA / rsLoRA flags"
    options_class: str = "LoraOptions"
    default: bool = True
    mergeable: bool = True
    mixable: bool = True
    encoder: bool = True
    noise_std: float = 0.1

    def check_files(self, config: Mapping[str, Any], tensor_shapes: Mapping[str, tuple[int, ...]], *,
                    where: str) -> None:
        check_served_config(config, where=where)
        problems = [problem for problem in (
            config_problem(config, "r", "int", minimum=1, nullable=False),
            config_problem(config, "lora_alpha", "number", nullable=False),
            config_problem(config, "use_rslora", "bool"), config_problem(config, "use_dora", "bool"),
            config_problem(config, "lora_dropout", "number", minimum=0)) if problem]
        problems += _pattern_problems(config, "alpha_pattern", "number")
        problems += _pattern_problems(config, "rank_pattern", "int")
        targets = config.get("target_modules")
        if targets is not None and not (isinstance(targets, str) or (
                isinstance(targets, list) and all(isinstance(t, str) for t in targets))):
            problems.append("target_modules must be a string or a list of strings")
        if problems:
            raise InvalidAdapterError(f"adapter_config.json beside {where} is not a usable LoRA config: "
                                      f"{'; '.join(problems)}; fix the values or save the adapter again with PEFT")
        if not any(".lora_A." in key for key in tensor_shapes):
            raise InvalidAdapterError(f"{where} has no lora_A tensors although adapter_config.json says "
                                      "method 'lora'; the config and weights do not belong together")

    def check_fits(self, config: Mapping[str, Any], tensor_shapes: Mapping[str, tuple[int, ...]],
                   base: Any) -> None:
        linear = base.linear_shapes
        embeddings: set[str] | None = None
        for key, shape in tensor_shapes.items():
            parsed = parse_key(key)
            if parsed is None or parsed.kind == "lora_magnitude_vector" or key.endswith(".bias"):
                continue  # lora_bias=True adds lora_B.bias [out_features]
            if parsed.kind.startswith("lora_embedding"):
                if embeddings is None:
                    embeddings = {name for name, _ in base.named_modules()}
                if parsed.module not in embeddings:
                    raise _missing(parsed.module, linear)
                continue
            if parsed.module not in linear:
                raise _missing(parsed.module, linear)
            in_features, out_features = linear[parsed.module]
            is_a = parsed.kind == "lora_A"
            expected, actual = (in_features, shape[-1]) if is_a else (out_features, shape[0])
            if len(shape) != 2 or actual != expected:
                side = "in_features" if is_a else "out_features"
                raise IncompatibleBaseError(
                    f"adapter tensor {key} has shape {tuple(shape)} but base module {parsed.module} has "
                    f"{side}={expected} (base shape in={in_features}, out={out_features}); the adapter was made "
                    "for a different architecture")

    def settings(self, config: Mapping[str, Any]) -> str:
        return rank_settings(config, r="r", alpha="lora_alpha")

    def recipe_problems(self, recipe: Any) -> list[str]:
        if recipe.adapter.last_layers is not None and recipe.data.format in ENCODER_TASK_TYPES:
            return ["adapter.last_layers needs a decoder base (set it to null)"]
        return []

    def peft_config(self, recipe: Any, base: Any) -> Any:
        from peft import LoraConfig

        section, task = recipe.adapter, recipe.task
        task_type = ENCODER_TASK_TYPES.get(task.type, "CAUSAL_LM")
        targets = section.target_modules
        if task_type != "CAUSAL_LM" and targets == "all-linear":  # the body's linears, never the new head
            targets = encoder_targets(base.linear_shapes, token=task_type == "TOKEN_CLS")
        layers = None
        if section.last_layers is not None:
            targets, layers = last_layers_targets(base, targets, section.last_layers)
        return LoraConfig(r=section.r, lora_alpha=section.alpha, lora_dropout=section.dropout,
                          target_modules=targets, layers_to_transform=layers, use_dora=section.use_dora,
                          use_rslora=section.use_rslora, task_type=task_type)

    def random_config(self, common: Mapping[str, Any], options: Mapping[str, Any]) -> Any:
        from peft import LoraConfig

        r = common["r"]
        return LoraConfig(task_type="CAUSAL_LM", r=r, lora_alpha=common["lora_alpha"] or 2 * r,
                          target_modules=list(common["target_modules"]), use_rslora=common["use_rslora"],
                          use_dora=common["use_dora"], init_lora_weights=False, **options)

    def noise(self, name: str, parameter: Any, noise: Any, std: float | None) -> Any:
        if "magnitude" in name:  # DoRA: keep magnitudes near the base row norms
            return parameter * (1 + 0.2 * noise)
        return super().noise(name, parameter, noise, std)


UNSERVED = {  # adapter_config key -> what it is; any truthy value is refused (by the registry and the runtime)
    "use_qalora": "QA-LoRA", "alora_invocation_tokens": "activated LoRA (aLoRA)", "arrow_config": "Arrow routing",
    "velora_config": "VeLoRA", "use_bdlora": "BD-LoRA", "monteclora_config": "MonteCLoRA", "kasa_config": "KaSA",
    "layer_replication": "layer replication", "target_parameters": "LoRA on raw parameters",
    "trainable_token_indices": "trainable tokens", "modules_to_save": "modules_to_save (full module copies)",
    "fan_in_fan_out": "fan_in_fan_out (Conv1D layers)",
}


def check_served_config(config: Mapping[str, Any], *, where: str) -> None:
    """Refuse LoRA variants adapterhub does not serve: one rule for the registry (``check_files``) and the runtime.

    An encoder adapter's saved head (``modules_to_save`` with a ``SEQ_CLS`` / ``TOKEN_CLS`` task type) is
    served by the runtime's heads, so it passes; on a decoder it is refused like every entry of :data:`UNSERVED`.

    Raises:
        InvalidAdapterError: the config names a variant, base-bias training or MiCA.

    >>> check_served_config({"use_qalora": True}, where="x")
    Traceback (most recent call last):
    ...
    adapterhub.errors.InvalidAdapterError: x uses QA-LoRA (use_qalora=True), which adapterhub does not serve; retrain or export it as plain LoRA/DoRA
    """
    head = config.get("task_type") in ENCODER_PEFT_TASK_TYPES
    for key, what in UNSERVED.items():
        if config.get(key) and not (head and key == "modules_to_save"):
            raise InvalidAdapterError(f"{where} uses {what} ({key}={config[key]!r}), which adapterhub does not "
                                      "serve; retrain or export it as plain LoRA/DoRA")
    if config.get("bias", "none") != "none":
        raise InvalidAdapterError(f"{where} trains base biases (bias={config['bias']!r}), which adapterhub does "
                                  "not serve; use bias='none' (or lora_bias=True)")
    if config.get("init_lora_weights") == "mica":
        raise InvalidAdapterError(f"{where} is a MiCA adapter, which adapterhub does not serve")


def last_layers_targets(base: Any, targets: str | list[str], last: int) -> tuple[list[str], list[int]]:
    """``(target_modules, layers_to_transform)`` for LoRA on the last ``last`` decoder layers of ``base``.

    PEFT's ``layers_to_transform`` needs module names, so ``all-linear`` becomes the linear
    layers' names inside a decoder layer (``q_proj`` ... ``down_proj``).

    Raises:
        RecipeError: ``last`` exceeds the base's layers.
    """
    from ..._transformers import decoder_layer_count
    from ...errors import RecipeError

    count = decoder_layer_count(base.model)
    if last > count:
        raise RecipeError(f"adapter.last_layers={last}, but base {base.spec.name!r} has {count} decoder layers; "
                          f"set adapter.last_layers to at most {count} (or null for every layer)")
    if targets == "all-linear":
        targets = sorted({name.rsplit(".", 1)[-1] for name in base.linear_shapes if _LAYER.search(name)})
    elif isinstance(targets, str):
        targets = [targets]
    return list(targets), list(range(count - last, count))


_LAYER = re.compile(r"\.layers\.\d+\.")


def _pattern_problems(config: Mapping[str, Any], key: str, kind: str) -> list[str]:
    """``alpha_pattern`` / ``rank_pattern``: an object of valid regular expressions to finite numbers."""
    patterns = config.get(key)
    if patterns is None:
        return []
    if not isinstance(patterns, dict):
        return [f"{key} must be an object of {{module regex: value}}, not {type(patterns).__name__}"]
    problems = []
    for pattern, value in patterns.items():
        try:
            re.compile(pattern)
        except (re.error, RecursionError, OverflowError) as error:
            problems.append(f"{key} key {pattern[:60]!r} is not a valid regular expression ({error})")
            continue
        problem = config_problem({pattern: value}, pattern, kind, required=True,
                                 minimum=1 if kind == "int" else None)
        if problem:
            problems.append(f"{key}[{pattern[:60]!r}]{problem[len(pattern):]}")
    return problems
ENCODER_TASK_TYPES = {"sequence_classification": "SEQ_CLS", "token_classification": "TOKEN_CLS"}
ENCODER_PEFT_TASK_TYPES = tuple(ENCODER_TASK_TYPES.values())


def encoder_targets(linear_shapes: Mapping[str, tuple[int, int]], *, token: bool) -> list[str]:
    """``all-linear`` on an encoder: every linear layer of its body by full name (token models have no pooler).

    >>> encoder_targets({"bert.encoder.layer.0.attention.self.query": (4, 4), "bert.pooler.dense": (4, 4)}, token=True)
    ['bert.encoder.layer.0.attention.self.query']
    """
    return sorted(name for name in linear_shapes if not (token and ".pooler." in f".{name}."))


def _missing(module: str, linear: Mapping[str, tuple[int, int]]) -> IncompatibleBaseError:
    example = next(iter(linear), "none")
    return IncompatibleBaseError(f"adapter targets module {module!r}, which this base does not have "
                                 f"(its linear modules look like {example!r}); use the base the adapter was made for")


LORA = LoraSpec()
