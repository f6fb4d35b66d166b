"""The wings of ``adapterhub/`` import only what DESIGN.md's "may use" column allows: arrows run down."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "adapterhub"
LEAVES = {"errors", "paths", "_transformers", "memory", "tokens", "cpu"}
SHARED = LEAVES | {"prompts", "entities", "scoring", "methods"}
MAY_USE = {  # wing -> wings it may import (itself always)
    "errors": set(), "paths": set(), "_transformers": set(), "memory": set(), "tokens": set(), "cpu": {"paths"},
    "prompts": {"errors"},
    "entities": {"errors"},
    "scoring": {"prompts", "tokens", "_transformers"},  # the README: "the above" leaves
    "methods": {"errors", "_transformers", "memory", "tokens"},  # each method's folder serves it too (leaves only)
    "base": LEAVES | {"hf.client"},  # Hugging Face ids load through the Hub client (itself a leaf)
    "registry": SHARED | {"base"},
    "hf": SHARED | {"base", "registry"},
    "training": SHARED | {"base", "registry", "hf"},
    "runtime": SHARED | {"base", "registry", "hf"},
    "serve": SHARED | {"base", "registry", "hf", "runtime"},
    "quickstart": SHARED | {"base", "registry", "hf", "training", "runtime"},
}


def _wing(module: str) -> str:
    parts = module.split(".")[1:]  # drop "adapterhub"
    if not parts or parts[0] in ("__init__", "__main__"):
        return "__init__"
    return parts[0]


def _imports(path: Path) -> set[str]:
    """Every ``adapterhub`` module this file imports, absolute, at any depth (lazy imports included)."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    package = package.removesuffix(".__init__")
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("adapterhub"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("adapterhub"):
                found.add(target)
                found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def _allowed(wing: str, target: str) -> bool:
    if target in ("adapterhub", "adapterhub.__version__"):
        return True
    other = _wing(target)
    return other == wing or other in MAY_USE[wing] or ".".join(target.split(".")[1:3]) in MAY_USE[wing]


def _wing_of(path: Path) -> str:
    return _wing(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))


MODULES = sorted(path for path in PACKAGE.rglob("*.py") if _wing_of(path) in MAY_USE)


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PACKAGE)) for p in MODULES])
def test_imports_run_down_the_wings(path):
    wing = _wing_of(path)
    upward = sorted(target for target in _imports(path) if not _allowed(wing, target))
    assert not upward, f"{path.relative_to(PACKAGE)} ({wing}) imports {upward}; see DESIGN.md's 'may use'"


def test_every_module_belongs_to_a_wing():
    wings = {_wing_of(path) for path in PACKAGE.rglob("*.py")}
    assert wings - set(MAY_USE) <= {"__init__", "bench", "cli"}, "a new top-level module needs a row in MAY_USE"


def test_the_layout_test_sees_an_upward_import():
    """The checker itself: a registry module importing the runtime is flagged."""
    assert not _allowed("registry", "adapterhub.runtime.hub")
    assert not _allowed("registry", "adapterhub.hf.sync")
    assert _allowed("runtime", "adapterhub.registry.store") and _allowed("base", "adapterhub.hf.client")
