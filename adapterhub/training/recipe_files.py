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
    _switch_method(raw, overrides)
    try:
        check_bounds(raw, label=label)
    except _Unbounded as error:
        raise RecipeError(f"recipe {label} is refused: {error}; write the values out plainly") from None
    try:
        validated = Recipe.model_validate(raw)
    except ValidationError as error:
        found = [_describe(item) for item in error.errors()]
        found += [problem for problem in _conflicts_beside(raw, error) if problem not in found]
        problems = "\n".join(f"  {problem}" for problem in found)
        raise RecipeError(f"invalid recipe {label}:\n{problems}") from None
    return validated.located_in(root)


MAX_RECIPE_BYTES = 1 * 2**20  # a recipe is a page of settings; data lives in data files
MAX_ALIASES = 100  # YAML aliases (*name) per file
MAX_DEPTH = 32  # nesting of mappings and lists
MAX_VALUES = 100_000  # values after aliases are expanded (an "alias bomb" is small on disk, huge in memory)


def safe_yaml(text: str, *, label: str) -> Any:
    """Parse YAML with bounded aliases, depth and expanded size.

    Raises:
        RecipeError: invalid YAML, or beyond :data:`MAX_ALIASES` / :data:`MAX_DEPTH` / :data:`MAX_VALUES`
            (the message never repeats the input).
    """
    import yaml

    class BoundedLoader(yaml.SafeLoader):
        aliases = depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                self.aliases += 1
                if self.aliases > MAX_ALIASES:
                    raise _Unbounded(f"more than {MAX_ALIASES} YAML aliases (*name)")
            self.depth += 1
            try:
                if self.depth > MAX_DEPTH:
                    raise _Unbounded(f"values nested more than {MAX_DEPTH} levels deep")
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    try:
        value = yaml.load(text, Loader=BoundedLoader)  # noqa: S506 - a SafeLoader subclass
        check_bounds(value, label=label)
    except _Unbounded as error:
        raise RecipeError(f"recipe {label} is refused: {error}; write the values out plainly") from None
    except RecursionError:
        raise RecipeError(f"recipe {label} nests values too deeply; a recipe is a few flat sections") from None
    except yaml.YAMLError as error:
        raise RecipeError(f"recipe {label} is not valid YAML: {_short(str(error), 600)}") from None
    return value


class _Unbounded(Exception):
    pass


def check_bounds(value: Any, *, label: str) -> None:
    """Refuse values nested deeper than :data:`MAX_DEPTH` or expanding to more than :data:`MAX_VALUES`.

    Iterative and cut off at the limit, so shared (aliased) subtrees cost at most the limit to walk.
    """
    stack, seen = [(value, 1)], 0
    while stack:
        item, depth = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise _Unbounded(f"it expands to more than {MAX_VALUES} values (YAML aliases repeating lists?)")
        if isinstance(item, (dict, list)):
            if depth > MAX_DEPTH:
                raise _Unbounded(f"values nested more than {MAX_DEPTH} levels deep")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RecipeError(f"recipe file {path} does not exist; create one with `adapterhub recipe new {path}`")
    if path.stat().st_size > MAX_RECIPE_BYTES:
        raise RecipeError(f"recipe {path} is {path.stat().st_size} bytes, more than the {MAX_RECIPE_BYTES} a recipe "
                          "may have; put rows in data files and name them under data:")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise RecipeError(f"cannot read recipe {path}: {error}") from None
    raw = safe_yaml(text, label=str(path))
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
        node[parts[-1]] = safe_yaml(text, label=f"override {key.strip()!r}") if text.strip() else None
    except RecipeError as error:
        if "not valid YAML" not in str(error):
            raise
        node[parts[-1]] = text


def _conflicts_beside(raw: dict[str, Any], error: ValidationError) -> list[str]:
    """Settings that contradict each other, found although some values are wrong.

    pydantic checks a whole recipe's consistency only once every value is valid; so the wrong
    values are taken out (their defaults apply) and the rest is checked again, once.
    """
    pruned = _deep_copy(raw)
    for item in error.errors():
        node, path = pruned, [part for part in item["loc"] if not str(part).startswith(("function-", "tagged-union"))]
        for part in path[:-1]:
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                node = node[part]
        if path and isinstance(node, dict) and path[-1] in node and item["type"] != "missing":
            del node[path[-1]]
    try:
        Recipe.model_validate(pruned)
    except ValidationError as again:
        return [_describe(item) for item in again.errors() if not item["loc"]]
    return []


def _switch_method(raw: dict[str, Any], overrides: Sequence[str]) -> None:
    """``--set adapter.method=X``: the file's options of its own method give way to X's (keys set too stay).

    >>> raw = {"adapter": {"method": "ia3", "r": 16, "target_modules": ["q_proj"]}}  # overrides applied
    >>> _switch_method(raw, ["adapter.method=ia3"]); raw["adapter"]
    {'method': 'ia3', 'target_modules': ['q_proj']}
    """
    from .. import methods

    adapter = raw.get("adapter")
    keys = [override.partition("=")[0].strip() for override in overrides]
    if not isinstance(adapter, dict) or "adapter.method" not in keys or adapter.get("method") not in methods.names():
        return
    own = methods.get(adapter["method"]).options.model_fields
    kept = {key.removeprefix("adapter.") for key in keys if key.startswith("adapter.")}
    raw["adapter"] = {key: value for key, value in adapter.items() if key in own or key in kept}


def _describe(item: dict[str, Any]) -> str:
    """One readable line for one pydantic error."""
    location = _location(item["loc"])
    where = ".".join(location)
    if item["type"] == "extra_forbidden":
        known = _known_keys([str(part) for part in item["loc"]][:-1])
        guess = difflib.get_close_matches(location[-1], known, n=1)
        hint = f" (did you mean {'.'.join([*location[:-1], guess[0]])!r}?)" if guess else f"; known keys: {', '.join(known)}"
        return f"unknown key {where!r}{hint}"
    if item["type"] == "missing":
        return f"{where}: required key is missing"
    if item["type"] == "union_tag_invalid":  # adapter.method names no registered method
        context = item.get("ctx") or {}
        key, expected = str(context.get("discriminator", "")).strip("'"), str(context.get("expected_tags", ""))
        return (f"{where}.{key}: unknown {key} {context.get('tag')!r}; use one of "
                f"{expected.replace(chr(39), '')}")
    message = item["msg"].removeprefix("Value error, ")
    if item["type"] == "value_error" and not where:
        return message
    shown = item.get("input")
    got = f" (got {_short(repr(shown))})" if shown is not None and not isinstance(shown, dict) else ""
    return f"{where}: {message}{got}" if where else f"{message}{got}"


def _location(loc: Sequence[Any]) -> list[str]:
    """An error's key path as the user wrote it: without pydantic's type steps or the method tag of ``adapter``."""
    location = [str(part) for part in loc if not str(part).startswith(("function-", "tagged-union"))]
    location = [part for part in location if part not in ("str", "list[str]", "Source", "float", "int")]
    if len(location) > 1 and location[0] == "adapter" and _member(Recipe, "adapter", location[1]) is not None:
        del location[1]  # adapter.<method>.r -> adapter.r
    return location


def _member(model: type[BaseModel], name: str, tag: str) -> type[BaseModel] | None:
    """The option model of a union field (``adapter``) whose ``method`` is ``tag``, else ``None``."""
    annotation = getattr(model.model_fields.get(name), "annotation", None)
    for candidate in getattr(annotation, "__args__", ()):
        method = getattr(candidate, "model_fields", {}).get("method")
        if method is not None and method.default == tag:
            return candidate
    return None


def _known_keys(location: list[str]) -> list[str]:
    model: type[BaseModel] = Recipe
    parts = list(location)
    while parts:
        part = parts.pop(0)
        if parts and _member(model, part, parts[0]) is not None:
            model = _member(model, part, parts.pop(0))  # adapter.<method>: that method's options
            continue
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


def starter_yaml(method: str | None = None) -> str:
    """A commented recipe listing every key with its default and description.

    Args:
        method: the adapter method whose options the ``adapter`` section lists (default: the default method).

    >>> text = starter_yaml()
    >>> "lr: 0.0002" in text and "# peak learning rate" in text
    True
    >>> "num_virtual_tokens: 20" in starter_yaml("prefix") and "r: 16" not in starter_yaml("prefix")
    True
    """
    from .recipe import adapter_options

    adapter = type(adapter_options(method))
    lines = ["# adapterhub training recipe. Train with:  adapterhub train THIS_FILE",
             "# Check without training:  adapterhub recipe check THIS_FILE",
             "# Every key below shows its default; delete what you don't change.", ""]
    _emit(Recipe, "", 0, lines, adapter)
    return "\n".join(lines) + "\n"


def _method_choices() -> str:
    """``adapter.method``'s comment: every registered method, in a phrase each."""
    from .. import methods

    listed = ", ".join(f"{name} ({methods.get(name).summary})" for name in methods.names())
    return f"{listed}; `adapterhub recipe new --method NAME` lists another method's options"


def _emit(model: type[BaseModel], prefix: str, indent: int, lines: list[str], adapter: type[BaseModel]) -> None:
    import yaml

    pad = "  " * indent
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        annotation = adapter if dotted == "adapter" else field.annotation
        nested = isinstance(annotation, type) and issubclass(annotation, BaseModel) and annotation is not Source
        if nested:
            lines.append(f"{pad}{name}:  # {field.description}")
            _emit(annotation, f"{dotted}.", indent + 1, lines, adapter)
            continue
        if dotted in _STARTER_VALUES:
            value = _STARTER_VALUES[dotted]
        elif field.is_required():
            value = None
        else:
            value = field.get_default(call_default_factory=True)
        value = list(value) if isinstance(value, tuple) else value
        rendered = yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("\n...").strip()
        lines.append(f"{pad}{name}: {rendered}  # {_method_choices() if dotted == 'adapter.method' else field.description}")
