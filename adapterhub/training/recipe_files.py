"""Recipe files: reading YAML, ``--set`` overrides, readable validation errors, the commented starter.

The schema itself is :mod:`adapterhub.training.recipe`.

>>> load_recipe({"name": "x", "data": {"train": "t.jsonl", "labels": ["a", "b"]}}, overrides=["adapter.r=4"]).adapter.r
4
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Sequence

from pydantic import BaseModel, ValidationError

from ..errors import RecipeError
from .recipe import Recipe, Source


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
        nested = isinstance(annotation, type) and issubclass(annotation, BaseModel) and annotation is not Source
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
