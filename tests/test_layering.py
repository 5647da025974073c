"""The shape of the code: the import graph of ``orchestrator/`` and ``dashboard/`` has no cycle and follows the layers
docs/design.md draws ("Layout"). Read from the source with ``ast``, so an import inside a function or under
``TYPE_CHECKING`` counts as much as one at the top: each is an arrow a reader has to follow."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Layers, lowest first: a module may import its own layer's modules and those of the layers below, nothing above.
BASE = {"orchestrator", "errors", "run_record", "cells", "wave_kinds", "extras", "context", "artifacts", "sizing",
        "scales"}
MAY_IMPORT: dict[str, set[str]] = {
    "base": {"base"},
    "spec": {"base"},
    "analysis": {"base", "spec"},
    "designs": {"base", "spec"},
    "store": {"base", "spec"},
    "strategies": {"base", "spec", "analysis", "designs"},
    "execution": {"base", "spec", "analysis", "designs", "store", "strategies"},
    "reporting": {"base", "spec", "analysis", "designs", "store", "strategies", "execution"},
    "dashboard": {"base", "spec", "analysis", "store", "reporting"},
    "cli": {"base", "spec", "analysis", "designs", "store", "strategies", "execution", "reporting", "dashboard"},
}
MAX_FLAT = 12  # modules left directly in orchestrator/


def modules() -> dict[str, Path]:
    out = {}
    for package in ("orchestrator", "dashboard"):
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports, anywhere in its source."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = name.split(".")[: len(name.split(".")) - node.level + (path.name == "__init__.py")]
                base = ".".join(package + ([node.module] if node.module else []))
            else:
                base = node.module
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # a name inside a module: the module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def layer(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "dashboard":
        return "dashboard"
    if len(parts) == 1 or parts[1] in BASE:
        return "base"
    if parts[1] in ("cli", "__main__"):
        return "cli"
    return parts[1]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                found.append(sorted([v, *component]))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_cycle():
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_type_only_cycle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "c"]]


def test_imports_follow_the_layers():
    wrong = sorted(f"{a} ({layer(a)}) imports {b} ({layer(b)})" for a, targets in graph().items() for b in targets
                   if layer(b) not in MAY_IMPORT[layer(a)] | {layer(a)})
    assert wrong == []


def test_every_module_has_a_layer():
    assert {layer(m) for m in graph()} <= set(MAY_IMPORT)


def test_few_modules_are_left_flat():
    flat = sorted(p.name for p in (ROOT / "orchestrator").glob("*.py"))
    assert len(flat) <= MAX_FLAT, flat


@pytest.mark.parametrize("heavy", ["torch", "ray"])
def test_the_dashboard_imports_no_heavy_library_anywhere_in_its_source(heavy):
    for path in (ROOT / "dashboard").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n == heavy or n.startswith(f"{heavy}.") for n in names), (path.name, names)
