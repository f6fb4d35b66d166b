"""No two ``adapterhub`` modules import each other, directly or round a longer loop (lazy imports count too).

The edges are read from the source as ``tests/test_layout.py`` reads them (AST, every depth).

A circle means neither module can be read, tested or moved without the other; the lazy import that
usually hides it only postpones the failure to the first call.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.test_layout import PACKAGE


def _module(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")


MODULES = {_module(path): path for path in PACKAGE.rglob("*.py")}


def _edges(module: str) -> set[str]:
    """The ``adapterhub`` modules ``module`` imports, at any depth of its code (lazy imports included).

    ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg`` (which defines
    or re-exports ``name``).
    """
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only = _type_checking_only(tree)
    for node in ast.walk(tree):
        if node in type_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(parts + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.update(f"{target}.{alias.name}" if f"{target}.{alias.name}" in MODULES else target
                         for alias in node.names)
    return {target for target in found if target in MODULES and target != module}


def _type_checking_only(tree: ast.AST) -> set[ast.AST]:
    """Nodes under ``if TYPE_CHECKING:``: imports for annotations, never run, so no edge at run time."""
    return {child for node in ast.walk(tree)
            if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")
            for statement in node.body for child in ast.walk(statement)}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each sorted, the list sorted."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:  # iterative enough: the package is a few hundred modules deep at most
        order[node] = low[node] = len(order)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in order:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], order[other])
        if low[node] == order[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in order:
            visit(node)
    return sorted(groups)


def test_the_cycle_finder_sees_a_lazy_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert import_cycles(graph) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_itself_round_a_circle():
    cycles = import_cycles({module: _edges(module) for module in MODULES})
    assert not cycles, "import circles among adapterhub modules:\n" + "\n".join(" <-> ".join(c) for c in cycles)
