"""Training recipes: one YAML file describes a whole adapter training run.

A recipe has six parts, each a small pydantic model whose fields carry their
default and a description (``adapterhub recipe new`` turns them into a
commented starter file):

* top level: ``name``, ``domain``, ``description``, ``tags``
* ``base``: which frozen model to train on, and whether to quantise it (QLoRA)
* ``adapter``: the method (``method:``, default ``lora``) and that method's own options
  (each method's ``options.py`` under :mod:`adapterhub.methods`)
* ``data``: where rows come from, their format and field names, prompts, labels
* ``training``: optimisation, schedule, evaluation, checkpoints, early stopping
* ``output``: registry, run directory, Hub push

Unknown keys are errors, and so is every wrong type: :func:`load_recipe`
raises one :class:`~adapterhub.errors.RecipeError` listing each bad key with
the fix. Relative data paths are resolved against the recipe file's folder.

Reading, overriding and the starter file live in :mod:`adapterhub.training.recipe_files`.

>>> from adapterhub.training import load_recipe
>>> raw = {"name": "demo", "data": {"train": "rows.jsonl", "labels": ["yes", "no"]}}
>>> recipe = load_recipe(raw)
>>> recipe.training.lr, recipe.adapter.method
(0.0002, 'lora')
>>> load_recipe(raw, overrides=["adapter.r=4"]).adapter.r
4
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from ..prompts import DEFAULT_CLASSIFICATION_TEMPLATE, TaskSpec
from ..registry.contract import ServeDefaults

FORMAT_FIELDS = {
    "classification": ("text", "label"),
    "instruction": ("instruction", "input", "output"),
    "chat": ("messages",),
    "completion": ("prompt", "completion", "text"),
    "sequence_classification": ("text", "label"),
    "token_classification": ("text", "entities", "tokens", "tags"),
}
"""The canonical row fields of each data format (``data.fields`` renames them)."""
ENCODER_FORMATS = ("sequence_classification", "token_classification")
"""Formats trained on an encoder base with a new head (no prompt: the text goes in as it is)."""
STOPPING_METRICS = {  # data.format -> validation metrics early stopping may watch (loss: lower is better)
    "classification": ("loss", "accuracy", "macro_f1"),
    "sequence_classification": ("loss", "accuracy", "macro_f1", "micro_f1"),
    "token_classification": ("loss", "f1", "precision", "recall", "macro_f1"),
}

QUANTIZATIONS = ("nf4", "fp4", "int8")
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Source(_Section):
    """A table of rows: a local file, or a ``datasets`` id with a split. A plain string means ``path``."""

    path: str | None = Field(None, description="local .jsonl, .json, .csv or .parquet file (relative to the recipe)")
    dataset: str | None = Field(None, description="a `datasets` id or local dataset folder, instead of path")
    config: str | None = Field(None, description="dataset configuration name (with dataset)")
    split: str = Field("train", description="dataset split, slices allowed: 'train[:90%]' (with dataset)")
    revision: str | None = Field(None, description="dataset revision (with dataset)")

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_origin(self) -> Source:
        if (self.path is None) == (self.dataset is None):
            raise ValueError("give exactly one of 'path' (a local file) or 'dataset' (a datasets id)")
        return self

    def describe(self) -> str:
        return self.path if self.path is not None else f"{self.dataset}[{self.split}]"


class BaseSection(_Section):
    """The frozen base model."""

    model: str = Field("smollm2-135m-instruct", description="embedded alias, local model folder or Hugging Face id")
    quantize: str | None = Field(
        None, description="load the base in 4-bit (nf4/fp4) or 8-bit (int8) for QLoRA; null (or none) = full precision")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="compute dtype; auto = float32 on CPU, bfloat16 on CUDA")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N (ignored under accelerate launch)")
    double_quant: bool = Field(True, description="with 4-bit quantize: also quantise the quantisation constants")
    keep_full_precision: list[str] = Field(
        default_factory=list, description="with quantize: linear layers left unquantised, by name or name part "
                                          "(down_proj, layers.0.); the LM head always is")

    @field_validator("quantize", mode="before")
    @classmethod
    def _none_means_none(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.lower() == "none"):
            return None
        if value not in QUANTIZATIONS:
            raise ValueError(f"use none (full precision), {', '.join(QUANTIZATIONS[:-1])} or {QUANTIZATIONS[-1]}")
        return value


def _adapter_options() -> Any:
    """The ``adapter`` section's type: every registered method's options, told apart by ``method``."""
    from .. import methods

    models = tuple(methods.get(name).options for name in methods.names())
    return Annotated[Union[models], Field(discriminator="method")]  # noqa: UP007 - built at run time


AdapterOptions = _adapter_options()
"""The recipe's ``adapter:`` section: one method's options model, chosen by its ``method`` key."""


def adapter_options(method: str | None = None) -> Any:
    """The default options of ``method`` (default: the default method), as a recipe's ``adapter`` section.

    >>> adapter_options("prefix").num_virtual_tokens
    20
    """
    from .. import methods

    return methods.get(method or methods.default()).options()


class EarlyStopping(_Section):
    """Stop when the validation metric stops improving."""

    patience: int | None = Field(None, ge=1, description="evaluations without improvement before stopping; null = off")
    metric: str = Field("loss", description="validation metric to watch: loss; accuracy, macro_f1 (classification "
                                            "formats); micro_f1 (sequence_classification); f1, precision, recall "
                                            "(token_classification: entity-level, exact spans)")
    min_delta: float = Field(0.0, ge=0, description="smallest change that counts as an improvement")


class DataSection(_Section):
    """Where the rows come from and how they become prompts and answers."""

    train: Source = Field(..., description="training rows (required)")
    validation: Source | None = Field(None, description="validation rows; null = split off validation_split")
    test: Source | None = Field(None, description="held-out rows scored once after training (never used to select)")
    validation_split: float = Field(0.0, ge=0, lt=1, description="fraction of train held out when validation is null")
    format: Literal["classification", "instruction", "chat", "completion", "sequence_classification",
                    "token_classification"] = Field(
        "classification", description="classification (text,label), instruction (instruction,input,output), "
                                      "chat (messages), completion (prompt,completion or text); on an encoder base: "
                                      "sequence_classification (text,label), token_classification (text,entities "
                                      "with character offsets, or CoNLL tokens,tags)")
    fields: dict[str, str] = Field(default_factory=dict, description="rename fields: {canonical: column}, e.g. {text: sentence}")
    prompt_template: str | None = Field(
        None, description="user message with {text} (and {labels}); null = a format default")
    system_prompt: str | None = Field(None, description="system message for the chat template")
    chat: bool = Field(True, description="wrap prompts in the base's chat template (completion never is)")
    labels: list[str] | None = Field(None, description="the label strings, in order (classification formats); "
                                                       "entity types for token_classification")
    max_length: int = Field(512, ge=8, description="longest example in tokens; longer answers are cut, longer prompts are errors")
    packing: bool = Field(False, description="pack several examples per row (LoRA only); else length-grouped batches")


class TrainingSection(_Section):
    """Optimisation, evaluation and checkpoints."""

    epochs: float = Field(1.0, gt=0, description="passes over the training rows (ignored when max_steps is set)")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; overrides epochs")
    lr: float = Field(2e-4, gt=0, description="peak learning rate (AdamW)")
    scheduler: Literal[SCHEDULERS] = Field("cosine", description="learning-rate schedule: " + ", ".join(SCHEDULERS))
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="fraction of steps spent warming up")
    warmup_steps: int | None = Field(None, ge=0, description="warm-up steps; overrides warmup_ratio")
    batch_size: int = Field(8, ge=1, description="examples per micro-batch (per process)")
    gradient_accumulation_steps: int = Field(1, ge=1, description="micro-batches per optimizer step")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    adam_betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas")
    max_grad_norm: float | None = Field(1.0, gt=0, description="clip the gradient norm; null = no clipping")
    seed: int = Field(0, description="seed for adapter init, data order and dropout")
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward (less memory, slower)")
    share_prompt_prefix: bool = Field(
        True, description="run the tokens all rows of a batch start with once per batch (same loss, faster; "
                          "dropout then draws one mask for them); off with gradient checkpointing or packing")
    eval_every: int | None = Field(None, ge=1, description="evaluate every N steps; null = at the end of each epoch")
    save_every: int | None = Field(None, ge=1, description="checkpoint every N steps; null = at the end of each epoch")
    keep_checkpoints: int = Field(2, ge=1, description="how many recent checkpoints to keep")
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping, description="stop early (validation needed)")
    load_best: bool = Field(True, description="register the adapter from the best validation evaluation")
    eval_base: bool = Field(True, description="classification: also score the bare base zero-shot with the same "
                                              "prompt (for comparison, and the baseline output.min_gain is checked against)")
    eval_batch_size: int = Field(128, ge=1, description="rows per forward pass when evaluating (when scoring labels: "
                                                         "texts × their labels per chunk of passes)")
    frozen_cache_mb: float = Field(
        2048, ge=0, description="with adapter.last_layers: memory for the frozen layers' outputs, computed once per "
                                "row and reused every epoch and evaluation; when the training rows' outputs do not fit, "
                                "every step runs the whole model; 0 = never keep them")


class OutputSection(_Section):
    """Where results go."""

    registry: str | None = Field(None, description="registry root; null = the default registry")
    run_dir: str | None = Field(None, description="run folder; null = runs/<name>-<timestamp>")
    register_on_success: bool = Field(True, description="register the adapter when training succeeds")
    prune_checkpoints: bool = Field(True, description="delete checkpoints/ once the run succeeds (only an "
                                                      "unfinished run needs them, for --resume); false keeps them")
    tags: list[str] = Field(default_factory=list, description="extra tags for the registered version")
    min_gain: float = Field(0.05, ge=0, lt=1, description="classification: register only when validation accuracy "
                                                            "beats chance (the most common label) and the bare base by "
                                                            "at least this (0.05 = 5 points); else keep the run only")
    register_anyway: bool = Field(False, description="register even when accuracy does not beat the baseline by "
                                                     "min_gain (as --register-anyway)")
    push_to_hub: str | None = Field(None, description="Hugging Face repo id to push the registered adapter to")

    @field_validator("tags")
    @classmethod
    def _registry_tags(cls, value: list[str]) -> list[str]:
        from ..registry.refs import validate_tag

        return [validate_tag(tag) for tag in value]


class Recipe(_Section):
    """A complete, validated training recipe (see the module docstring)."""

    name: str = Field(..., pattern=r"^[a-z0-9][a-z0-9._-]*$",
                      description="adapter name in the registry (required): lowercase letters, digits, '.', '_', '-'")
    domain: str | None = Field(None, description="domain label, e.g. finance; null = the name")
    description: str = Field("", description="one line shown in listings and model cards")
    tags: list[str] = Field(default_factory=list, description="tags for the registered version")
    base: BaseSection = Field(default_factory=BaseSection, description="the frozen base model")
    adapter: AdapterOptions = Field(default_factory=adapter_options,
                                    description="the trainable adapter: its method and that method's options")
    data: DataSection = Field(..., description="training and evaluation data")
    training: TrainingSection = Field(default_factory=TrainingSection, description="optimisation")
    output: OutputSection = Field(default_factory=OutputSection, description="results")
    serve: ServeDefaults = Field(default_factory=ServeDefaults, description="the serving contract recorded with the "
                                 "adapter: default sampling, stop strings, response schema (README \"Structured output\")")
    _root: Path = PrivateAttr(default_factory=Path.cwd)  # folder that relative data paths are resolved in

    @field_validator("adapter", mode="before")
    @classmethod
    def _default_method(cls, value: Any) -> Any:
        """An ``adapter`` section that names no method is the default method's."""
        from .. import methods

        if isinstance(value, dict) and "method" not in value:
            return {"method": methods.default(), **value}
        return value

    @field_validator("name")
    @classmethod
    def _registry_name(cls, value: str) -> str:
        """The registry's own rule, checked now so a finished training run never fails to register."""
        from ..registry.refs import validate_name

        return validate_name(value)

    @field_validator("domain")
    @classmethod
    def _registry_domain(cls, value: str | None) -> str | None:
        from ..registry.refs import validate_name

        return None if value is None else validate_name(value, what="domain")

    @field_validator("tags")
    @classmethod
    def _registry_tags(cls, value: list[str]) -> list[str]:
        from ..registry.refs import validate_tag

        return [validate_tag(tag) for tag in value]

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        """Settings that contradict each other: every one found, in one error."""
        from .. import methods

        method = methods.get(self.adapter.method)
        problems = [*self._data_problems(), *method.recipe_problems(self)]
        if self.base.keep_full_precision and self.base.quantize is None:
            problems.append("base.keep_full_precision needs base.quantize (nf4, fp4 or int8): an unquantised base "
                            "keeps every layer in full precision already")
        has_validation = self.data.validation is not None or self.data.validation_split > 0
        stopping = self.training.early_stopping
        if stopping.patience is not None and not has_validation:
            problems.append("training.early_stopping needs validation rows: set data.validation or "
                            "data.validation_split")
        allowed = STOPPING_METRICS.get(self.data.format, ("loss",))
        if stopping.metric not in allowed:
            formats = [repr(fmt) for fmt, metrics in STOPPING_METRICS.items() if stopping.metric in metrics]
            problems.append(f"training.early_stopping.metric {stopping.metric!r} needs data.format {' or '.join(formats)}"
                            if formats else f"unknown training.early_stopping.metric {stopping.metric!r}; for data.format "
                            f"{self.data.format!r} use one of {', '.join(allowed)}")
        if self.data.format in ENCODER_FORMATS:
            if not method.encoder:
                on_encoders = " or ".join(repr(name) for name in methods.names() if methods.get(name).encoder)
                problems.append(f"data.format {self.data.format!r} trains a head on an encoder with adapter.method "
                                f"{on_encoders} only")
            if self.data.packing:
                problems.append(f"data.packing does not apply to data.format {self.data.format!r}")
        if problems:
            raise ValueError("\n  ".join(problems))
        return self

    @model_validator(mode="after")
    def _serve_fits_task(self) -> Recipe:
        if self.serve.response_schema is not None and self.data.format not in ("instruction", "chat", "completion"):
            raise ValueError(f"serve.schema constrains generated answers; a {self.data.format!r} adapter does not "
                             "generate (drop serve.schema)")
        return self

    def _data_problems(self) -> list[str]:
        data, problems = self.data, []
        allowed = FORMAT_FIELDS[data.format]
        for canonical in data.fields:
            if canonical not in allowed:
                problems.append(f"data.fields: {canonical!r} is no field of format {data.format!r}; "
                                f"rename one of {list(allowed)}")
        template_ok = data.prompt_template is None or "{text}" in data.prompt_template
        if not template_ok:
            problems.append(f"data.prompt_template {data.prompt_template!r} must contain '{{text}}'")
        if data.format in ("classification", *ENCODER_FORMATS):
            if not data.labels:
                what = "entity types" if data.format == "token_classification" else "label strings"
                problems.append(f"data.labels is required for format {data.format!r}: list the {what}")
            elif template_ok:
                try:
                    self.task  # validates labels and template through TaskSpec
                except ValueError as error:
                    problems.append(str(error))
        elif data.labels is not None:
            problems.append(f"data.labels only applies to format 'classification' (or the encoder formats), "
                            f"not {data.format!r}")
        return problems

    @property
    def task(self) -> TaskSpec:
        """The :class:`TaskSpec` the adapter is trained for (stored in its manifest)."""
        from ..errors import ConfigError

        data = self.data
        try:
            if data.format in ENCODER_FORMATS:
                return TaskSpec(type=data.format, labels=tuple(data.labels or ()), chat=False)
            if data.format == "classification":
                return TaskSpec(type="classification", labels=tuple(data.labels or ()), system_prompt=data.system_prompt,
                                prompt_template=data.prompt_template or DEFAULT_CLASSIFICATION_TEMPLATE, chat=data.chat)
            chat = data.chat and data.format != "completion"
            return TaskSpec(type="generation", prompt_template=data.prompt_template or "{text}",
                            system_prompt=data.system_prompt, chat=chat)
        except ConfigError as error:
            raise ValueError(f"data: {error}") from None

    @property
    def adapter_domain(self) -> str:
        return self.domain or self.name

    def resolve_path(self, path: str) -> Path:
        """A data path as written in the recipe, made absolute against :attr:`root`."""
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else (self._root / candidate).resolve()

    @property
    def root(self) -> Path:
        """The folder relative data paths are resolved in (the recipe file's folder)."""
        return self._root

    def located_in(self, folder: str | Path | None) -> Recipe:
        """Resolve relative data paths in ``folder`` from now on (``None``: the working directory); returns ``self``.

        >>> Recipe.model_validate(raw).located_in("recipes").root.name  # doctest: +SKIP
        'recipes'
        """
        self._root = Path(folder).resolve() if folder is not None else Path.cwd()
        return self

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe as plain data, with absolute data paths (re-runnable from anywhere)."""
        data = self.model_dump(mode="json", by_alias=True)
        for split in ("train", "validation", "test"):
            source = getattr(self.data, split)
            if source is not None and source.path is not None:
                data["data"][split]["path"] = str(self.resolve_path(source.path))
        return data

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)
