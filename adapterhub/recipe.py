"""Training recipes: one YAML file describes a whole adapter training run.

A recipe has six parts, each a small pydantic model whose fields carry their
default and a description (``adapterhub recipe new`` turns them into a
commented starter file):

* top level: ``name``, ``domain``, ``description``, ``tags``
* ``base``: which frozen model to train on, and whether to quantise it (QLoRA)
* ``adapter``: ``lora`` (with DoRA / rsLoRA flags) or ``prefix`` tuning
* ``data``: where rows come from, their format and field names, prompts, labels
* ``training``: optimisation, schedule, evaluation, checkpoints, early stopping
* ``output``: registry, run directory, Hub push

Unknown keys are errors, and so is every wrong type: :func:`load_recipe`
raises one :class:`~adapterhub.errors.RecipeError` listing each bad key with
the fix. Relative data paths are resolved against the recipe file's folder.

>>> raw = {"name": "demo", "data": {"train": "rows.jsonl", "labels": ["yes", "no"]}}
>>> recipe = load_recipe(raw)
>>> recipe.training.lr, recipe.adapter.method
(0.0002, 'lora')
>>> load_recipe(raw, overrides=["adapter.r=4"]).adapter.r
4
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from .errors import RecipeError
from .prompts import DEFAULT_CLASSIFICATION_TEMPLATE, TaskSpec

FORMAT_FIELDS = {
    "classification": ("text", "label"),
    "instruction": ("instruction", "input", "output"),
    "chat": ("messages",),
    "completion": ("prompt", "completion", "text"),
}
"""The canonical row fields of each data format (``data.fields`` renames them)."""

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
    quantize: Literal["none", "nf4", "fp4", "int8"] = Field(
        "none", description="load the base in 4-bit (nf4/fp4) or 8-bit (int8) for QLoRA; none = full precision")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="compute dtype; auto = float32 on CPU, bfloat16 on CUDA")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N (ignored under accelerate launch)")

    @model_validator(mode="before")
    @classmethod
    def _none_means_none(cls, value: Any) -> Any:
        if isinstance(value, dict) and value.get("quantize", "none") is None:
            return {**value, "quantize": "none"}
        return value


class AdapterSection(_Section):
    """The trainable adapter (PEFT)."""

    method: Literal["lora", "prefix"] = Field("lora", description="lora (low-rank update) or prefix (prefix tuning)")
    r: int = Field(16, ge=1, description="LoRA rank")
    alpha: float = Field(32.0, gt=0, description="LoRA scaling numerator (scale = alpha / r, or alpha / sqrt(r))")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the LoRA input")
    target_modules: str | list[str] = Field(
        "all-linear", description="module names to adapt (e.g. [q_proj, v_proj]) or 'all-linear'")
    use_dora: bool = Field(False, description="DoRA: weight-decomposed LoRA")
    use_rslora: bool = Field(False, description="rsLoRA: scale by alpha / sqrt(r)")
    num_virtual_tokens: int = Field(20, ge=1, description="prefix length in tokens (prefix)")
    prefix_projection: bool = Field(False, description="train the prefix through a small MLP (prefix)")
    prefix_init_text: str | None = Field(
        None, description="start the prefix as the base's keys/values for this text, e.g. a task description; "
                          "null = random (prefix)")


class EarlyStopping(_Section):
    """Stop when the validation metric stops improving."""

    patience: int | None = Field(None, ge=1, description="evaluations without improvement before stopping; null = off")
    metric: Literal["loss", "accuracy"] = Field("loss", description="validation metric to watch (accuracy: classification)")
    min_delta: float = Field(0.0, ge=0, description="smallest change that counts as an improvement")


class DataSection(_Section):
    """Where the rows come from and how they become prompts and answers."""

    train: Source = Field(..., description="training rows (required)")
    validation: Source | None = Field(None, description="validation rows; null = split off validation_split")
    test: Source | None = Field(None, description="held-out rows scored once after training (never used to select)")
    validation_split: float = Field(0.0, ge=0, lt=1, description="fraction of train held out when validation is null")
    format: Literal["classification", "instruction", "chat", "completion"] = Field(
        "classification", description="classification (text,label), instruction (instruction,input,output), "
                                      "chat (messages), completion (prompt,completion or text)")
    fields: dict[str, str] = Field(default_factory=dict, description="rename fields: {canonical: column}, e.g. {text: sentence}")
    prompt_template: str | None = Field(
        None, description="user message with {text} (and {labels}); null = a format default")
    system_prompt: str | None = Field(None, description="system message for the chat template")
    chat: bool = Field(True, description="wrap prompts in the base's chat template (completion never is)")
    labels: list[str] | None = Field(None, description="the label strings, in order (classification)")
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
    eval_base: bool = Field(False, description="also score the bare base zero-shot with the same prompt (for comparison)")
    eval_batch_size: int = Field(32, ge=1, description="rows per forward pass when evaluating")


class OutputSection(_Section):
    """Where results go."""

    registry: str | None = Field(None, description="registry root; null = the default registry")
    run_dir: str | None = Field(None, description="run folder; null = runs/<name>-<timestamp>")
    register_on_success: bool = Field(True, description="register the adapter when training succeeds")
    tags: list[str] = Field(default_factory=list, description="extra tags for the registered version")
    push_to_hub: str | None = Field(None, description="Hugging Face repo id to push the registered adapter to")


class Recipe(_Section):
    """A complete, validated training recipe (see the module docstring)."""

    name: str = Field(..., pattern=r"^[a-z0-9][a-z0-9._-]*$", description="adapter name in the registry (required)")
    domain: str | None = Field(None, description="domain label, e.g. finance; null = the name")
    description: str = Field("", description="one line shown in listings and model cards")
    tags: list[str] = Field(default_factory=list, description="tags for the registered version")
    base: BaseSection = Field(default_factory=BaseSection, description="the frozen base model")
    adapter: AdapterSection = Field(default_factory=AdapterSection, description="the trainable adapter")
    data: DataSection = Field(..., description="training and evaluation data")
    training: TrainingSection = Field(default_factory=TrainingSection, description="optimisation")
    output: OutputSection = Field(default_factory=OutputSection, description="results")
    _root: Path = PrivateAttr(default_factory=Path.cwd)  # folder that relative data paths are resolved in

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        data, adapter, training = self.data, self.adapter, self.training
        allowed = FORMAT_FIELDS[data.format]
        for canonical in data.fields:
            if canonical not in allowed:
                raise ValueError(f"data.fields: {canonical!r} is no field of format {data.format!r}; "
                                 f"rename one of {list(allowed)}")
        if data.format == "classification":
            if not data.labels:
                raise ValueError("data.labels is required for format 'classification': list the label strings")
            self.task  # validates labels and template through TaskSpec
        elif data.labels is not None:
            raise ValueError(f"data.labels only applies to format 'classification', not {data.format!r}")
        if data.prompt_template is not None and "{text}" not in data.prompt_template:
            raise ValueError(f"data.prompt_template must contain '{{text}}', got {data.prompt_template!r}")
        if adapter.method == "prefix" and self.base.quantize != "none":
            raise ValueError("adapter.method 'prefix' cannot train on a quantized base (QLoRA is a LoRA technique); "
                             "set base.quantize: none or adapter.method: lora")
        if adapter.prefix_init_text is not None and (adapter.method != "prefix" or adapter.prefix_projection):
            raise ValueError("adapter.prefix_init_text needs adapter.method 'prefix' without prefix_projection")
        if adapter.method == "prefix" and training.gradient_checkpointing:
            raise ValueError("training.gradient_checkpointing does not work with prefix tuning (transformers drops the "
                             "key/value cache that carries the prefix); set it to false")
        if adapter.method == "prefix" and data.packing:
            raise ValueError("data.packing does not work with prefix tuning (the prefix is shared per row); "
                             "set data.packing: false")
        has_validation = data.validation is not None or data.validation_split > 0
        if training.early_stopping.patience is not None and not has_validation:
            raise ValueError("training.early_stopping needs validation rows: set data.validation or data.validation_split")
        if training.early_stopping.metric == "accuracy" and data.format != "classification":
            raise ValueError("training.early_stopping.metric 'accuracy' needs data.format 'classification'")
        return self

    @property
    def task(self) -> TaskSpec:
        """The :class:`TaskSpec` the adapter is trained for (stored in its manifest)."""
        from .errors import ConfigError

        data = self.data
        try:
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

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe as plain data, with absolute data paths (re-runnable from anywhere)."""
        data = self.model_dump(mode="json")
        for split in ("train", "validation", "test"):
            source = getattr(self.data, split)
            if source is not None and source.path is not None:
                data["data"][split]["path"] = str(self.resolve_path(source.path))
        return data

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


def load_recipe(recipe: str | Path | dict[str, Any] | Recipe, *, overrides: Sequence[str] = (),
                root: str | Path | None = None) -> Recipe:
    """Read and validate a recipe.

    Args:
        recipe: a YAML file path, a dict, or a :class:`Recipe` (returned as is unless overridden).
        overrides: ``"section.key=value"`` strings applied before validation; values are
            parsed as YAML (``training.lr=1e-4``, ``data.packing=true``, ``tags=[a,b]``).
        root: folder for relative data paths; default: the recipe file's folder (or cwd for a dict).

    Returns:
        The validated :class:`Recipe`.

    Raises:
        RecipeError: the file is missing or not YAML, a key is unknown, a value has the wrong
            type or range, or settings contradict each other. The message lists every problem.

    >>> load_recipe({"name": "x", "data": {"train": "t.jsonl", "labels": ["a", "b"]}, "trainig": {}})
    Traceback (most recent call last):
    ...
    adapterhub.errors.RecipeError: invalid recipe <dict>:
      unknown key 'trainig' (did you mean 'training'?)
    """
    label = "<dict>"
    if isinstance(recipe, Recipe):
        if not overrides:
            return recipe
        raw, root = recipe.model_dump(mode="json"), root or recipe.root
    elif isinstance(recipe, dict):
        raw = _deep_copy(recipe)
    else:
        path = Path(recipe).expanduser()
        label, raw, root = str(path), _read_yaml(path), root or path.resolve().parent
    for override in overrides:
        _apply_override(raw, override)
    try:
        validated = Recipe.model_validate(raw)
    except ValidationError as error:
        problems = "\n".join(f"  {_describe(item)}" for item in error.errors())
        raise RecipeError(f"invalid recipe {label}:\n{problems}") from None
    validated._root = Path(root).resolve() if root is not None else Path.cwd()
    return validated


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise RecipeError(f"recipe file {path} does not exist; create one with `adapterhub recipe new {path}`")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise RecipeError(f"recipe {path} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe {path} must be a YAML mapping of sections (name:, data:, training: ...)")
    return raw


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _deep_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_deep_copy(item) for item in value]
    return value


def _apply_override(raw: dict[str, Any], override: str) -> None:
    """Set ``a.b.c=value`` in a nested dict (the value parsed as YAML)."""
    import yaml

    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"bad override {override!r}; write section.key=value, e.g. training.lr=1e-4")
    parts = key.strip().split(".")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if isinstance(child, str) and part in ("train", "validation", "test"):
            child = {"path": child}  # data.train.split=... on a string source
        if child is None:
            child = {}
        if not isinstance(child, dict):
            raise RecipeError(f"override {override!r}: {'.'.join(parts[:depth + 1])} is not a section")
        node[part] = child
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        node[parts[-1]] = text


def _describe(item: dict[str, Any]) -> str:
    """One readable line for one pydantic error."""
    location = [str(part) for part in item["loc"] if not str(part).startswith(("function-", "tagged-union"))]
    location = [part for part in location if part not in ("str", "list[str]", "Source", "float", "int")]
    where = ".".join(location)
    if item["type"] == "extra_forbidden":
        known = _known_keys(location[:-1])
        guess = difflib.get_close_matches(location[-1], known, n=1)
        hint = f" (did you mean {'.'.join([*location[:-1], guess[0]])!r}?)" if guess else f"; known keys: {', '.join(known)}"
        return f"unknown key {where!r}{hint}"
    if item["type"] == "missing":
        return f"{where}: required key is missing"
    message = item["msg"].removeprefix("Value error, ")
    if item["type"] == "value_error" and not where:
        return message
    shown = item.get("input")
    got = f" (got {shown!r})" if shown is not None and not isinstance(shown, dict) else ""
    return f"{where}: {message}{got}" if where else f"{message}{got}"


def _known_keys(location: list[str]) -> list[str]:
    model: type[BaseModel] = Recipe
    for part in location:
        field = model.model_fields.get(part)
        annotation = getattr(field, "annotation", None)
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            return []
        model = nested[0]
    return list(model.model_fields)


# --- the commented starter --------------------------------------------------------------------------------------
_STARTER_VALUES = {"name": "my-adapter", "domain": "my-domain",
                   "data.train": "data/my-domain/train.jsonl", "data.validation": "data/my-domain/validation.jsonl",
                   "data.labels": ["yes", "no"]}


def starter_yaml() -> str:
    """A commented recipe listing every key with its default and description.

    >>> text = starter_yaml()
    >>> "lr: 0.0002" in text and "# peak learning rate" in text
    True
    """
    lines = ["# adapterhub training recipe. Train with:  adapterhub train THIS_FILE",
             "# Check without training:  adapterhub recipe check THIS_FILE",
             "# Every key below shows its default; delete what you don't change.", ""]
    _emit(Recipe, "", 0, lines)
    return "\n".join(lines) + "\n"


def _emit(model: type[BaseModel], prefix: str, indent: int, lines: list[str]) -> None:
    import yaml

    pad = "  " * indent
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        annotation = field.annotation
        nested = isinstance(annotation, type) and issubclass(annotation, _Section) and annotation is not Source
        if nested:
            lines.append(f"{pad}{name}:  # {field.description}")
            _emit(annotation, f"{dotted}.", indent + 1, lines)
            continue
        if dotted in _STARTER_VALUES:
            value = _STARTER_VALUES[dotted]
        elif field.is_required():
            value = None
        else:
            value = field.get_default(call_default_factory=True)
        value = list(value) if isinstance(value, tuple) else value
        rendered = yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("\n...").strip()
        lines.append(f"{pad}{name}: {rendered}  # {field.description}")
