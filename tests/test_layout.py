"""The layout of ``adapterhub/``: the wings import only what README's "Code layout" table ("may use" column) allows
(arrows run down), and no module reaches into another module's private names (``obj._name``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "adapterhub"
LEAVES = {"errors", "paths", "_transformers", "memory", "tokens", "cpu"}
SHARED = LEAVES | {"prompts", "entities", "scoring", "grammar", "methods"}
MAY_USE = {  # wing -> wings it may import (itself always)
    "errors": set(), "paths": set(), "_transformers": set(), "memory": set(), "tokens": set(), "cpu": {"paths"},
    "prompts": {"errors"},
    "entities": {"errors"},
    "grammar": {"errors"},
    "scoring": {"prompts", "tokens", "_transformers"},  # the README: "the above" leaves
    "methods": {"errors", "_transformers", "memory", "tokens"},  # each method's folder serves it too (leaves only)
    "base": LEAVES | {"hf.client"},  # Hugging Face ids load through the Hub client (itself a leaf)
    "registry": SHARED | {"base"},
    "hf": SHARED | {"base", "registry"},
    "training": SHARED | {"base", "registry", "hf"},
    "runtime": SHARED | {"base", "registry", "hf"},
    "serve": SHARED | {"base", "registry", "hf", "runtime", "lifecycle"},
    "quickstart": SHARED | {"base", "registry", "hf", "training", "runtime"},
    "lifecycle": SHARED | {"base", "registry", "hf", "training", "runtime"},  # gates evaluate through the hub
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
    assert not upward, f"{path.relative_to(PACKAGE)} ({wing}) imports {upward}; see README's 'Code layout'"


def test_every_module_belongs_to_a_wing():
    wings = {_wing_of(path) for path in PACKAGE.rglob("*.py")}
    assert wings - set(MAY_USE) <= {"__init__", "bench", "cli"}, "a new top-level module needs a row in MAY_USE"


def test_the_layout_test_sees_an_upward_import():
    """The checker itself: a registry module importing the runtime is flagged."""
    assert not _allowed("registry", "adapterhub.runtime.hub")
    assert not _allowed("registry", "adapterhub.hf.sync")
    assert _allowed("runtime", "adapterhub.registry.store") and _allowed("base", "adapterhub.hf.client")


# --- private names stay in their file ------------------------------------------------------------------------
# A single-underscore name is its file's business. Reading or writing ``x._name`` is fine where ``x`` is
# ``self``/``cls`` and ``_name`` is defined in this file (or in the file of a base class the enclosing class
# names), or where ``_name`` is defined in this file and in no other module of the package (so ``x`` can
# only be this file's object). Dunder names are public protocol. What is left reaches into another
# module's object, as ``stepping.py`` once did with the hub's ``_lock``, ``_residency`` and ``_methods``.
OUTSIDE_PRIVATES = {  # (receiver, name) of third-party privates with no public equivalent
    ("argparse", "_SubParsersAction"),  # the type add_subparsers() returns; argparse exports no public name for it
    ("config", "_attn_implementation"),  # transformers selects the attention function by this config attribute
}
KNOWN_REACHES = {  # (file, name) reaches into another of our modules, to be removed (each one is debt)
}


def _defined(tree: ast.AST) -> set[str]:
    """Every name a file defines: functions, classes, assigned names and attributes, annotated fields."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names


def _module_file(module: str) -> Path | None:
    path = PACKAGE.parent.joinpath(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _base_files(path: Path, tree: ast.AST) -> dict[str, Path]:
    """Names this file imports from the package, and the file each comes from."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    package = package.removesuffix(".__init__")
    found: dict[str, Path] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            source = _module_file(target) if target.startswith("adapterhub") else None
            for alias in node.names if source else ():
                found[alias.asname or alias.name] = source
    return found


def _ancestor_files(node: ast.ClassDef, imported: dict[str, Path]) -> set[Path]:
    """The package files that define ``node``'s base classes, their base classes, and so on up the chain."""
    files: set[Path] = set()
    pending = [(base.id, imported[base.id]) for base in node.bases if isinstance(base, ast.Name) and base.id in imported]
    while pending:
        name, path = pending.pop()
        if path in files:
            continue
        files.add(path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        parents = _base_files(path, tree)
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == name):
            pending += [(base.id, parents[base.id]) for base in cls.bases
                        if isinstance(base, ast.Name) and base.id in parents]
    return files


PRIVATE_OWNERS: dict[str, set[Path]] = {}  # private name -> package files that define it
for _path in PACKAGE.rglob("*.py"):
    for _name in _defined(ast.parse(_path.read_text(encoding="utf-8"))):
        if _name.startswith("_") and not _name.startswith("__"):
            PRIVATE_OWNERS.setdefault(_name, set()).add(_path)


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_reaches(path: Path, *, source: str | None = None) -> list[str]:
    """``line: receiver._name`` for every private name the package file ``path`` (or ``source`` read as that
    file) uses that belongs to another module."""
    tree = ast.parse(path.read_text(encoding="utf-8") if source is None else source)
    own, imported = _defined(tree), _base_files(path, tree)
    inherited: dict[ast.AST, set[str]] = {}  # class -> names its ancestor classes' files define
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            files = _ancestor_files(node, imported)
            names = set().union(*(_defined(ast.parse(f.read_text(encoding="utf-8"))) for f in files))
            for child in ast.walk(node):
                inherited.setdefault(child, set()).update(names)
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and _private(node.attr)):
            continue
        receiver = ast.unparse(node.value)
        if receiver in ("self", "cls"):
            allowed = node.attr in own or node.attr in inherited.get(node, set())
        else:
            allowed = node.attr in own and PRIVATE_OWNERS.get(node.attr, {path}) <= {path}
        if not allowed and (receiver, node.attr) not in OUTSIDE_PRIVATES:
            found.append((node.lineno, node.col_offset, f"{node.lineno}: {receiver}.{node.attr}"))
    return [line for *_, line in sorted(found)]


EVERY_MODULE = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", EVERY_MODULE, ids=[str(p.relative_to(PACKAGE)) for p in EVERY_MODULE])
def test_no_module_reaches_into_another_modules_privates(path):
    relative = path.relative_to(PACKAGE).as_posix()
    reaches = [line for line in private_reaches(path) if (relative, line.split(".")[-1]) not in KNOWN_REACHES]
    assert not reaches, (f"{relative} uses private names of other modules' objects: {reaches}; "
                         "give the owner a public method or property and call that")


RESIDENCY_FILES = [PACKAGE / "runtime" / name for name in ("hub.py", "residency.py", "slots.py", "stepping.py")]
RESIDENCY_PRIVATES = {name for path in RESIDENCY_FILES for name in _defined(ast.parse(path.read_text(encoding="utf-8")))
                      if _private(name)}
TESTS = sorted(path for path in Path(__file__).parent.rglob("*.py") if path.name != "test_layout.py")


@pytest.mark.parametrize("path", TESTS, ids=[str(p.relative_to(Path(__file__).parent)) for p in TESTS])
def test_tests_use_the_hub_and_its_residency_through_their_public_api(path):
    """Tests see the hub, its residency, resident entries and the stepper as users do (``hub.residency``,
    ``hub.resident()``); a test that needs more is a missing public method."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    reaches = [f"{node.lineno}: {ast.unparse(node.value)}.{node.attr}" for node in ast.walk(tree)
               if isinstance(node, ast.Attribute) and node.attr in RESIDENCY_PRIVATES
               and ast.unparse(node.value) not in ("self", "cls")]  # a test's own helper classes keep theirs
    assert not reaches, f"{path.name} reads private state of the hub or its residency: {reaches}"


def test_the_layout_test_sees_a_reach_into_another_modules_privates():
    """The checker itself: the stepper of old (``hub._lock``, ``hub._residency``) and a mixin reading its
    host's private method are flagged; a file's own private, read on another of its objects, is not."""
    stepping = PACKAGE / "runtime" / "stepping.py"
    old = "def acquire(hub, ref):\n    with hub._lock:\n        return hub._residency.get(ref)\n"
    assert private_reaches(stepping, source=old) == ["2: hub._lock", "3: hub._residency"]
    mixin = "class Calls:\n    def generate(self):\n        return self._pinned([])\n"
    assert private_reaches(PACKAGE / "runtime" / "decoder.py", source=mixin) == ["3: self._pinned"]
    own = "class A:\n    def __init__(self):\n        self._only_here = 1\n\n    def same(self, other):\n" \
          "        return other._only_here, self.__class__\n"
    assert private_reaches(stepping, source=own) == []
    assert private_reaches(stepping, source="import torch\nx = torch._C\n") == ["2: torch._C"]
