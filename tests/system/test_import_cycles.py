"""No import cycles in gateway/, radios/ or han_ota/ (issue 17), deferred imports included.

A function-level import hides a cycle from Python but not from a reader: the two
modules still cannot be understood apart.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("eui64", "gateway", "radios", "han_ota")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, known: set[str]) -> set[str]:
    found: set[str] = set()
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            # `from .han import X` inside radios/sim is radios.sim.han: relative imports count too.
            base = ".".join(package[: len(package) - node.level + 1] if node.level else [])
            module = ".".join(part for part in (base, node.module or "") if part)
            names = [module] + [f"{module}.{alias.name}" for alias in node.names]
        for name in names:
            if name in known:
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    known = set(paths)
    edges = {name: imports_of(path, known) - {name} for name, path in paths.items()}
    # A package's __init__ re-exporting its modules is not a cycle with them.
    return {name: {t for t in targets if not name.startswith(t + ".")} for name, targets in edges.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_checker_sees_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_relative_imports_are_resolved() -> None:
    known = {"radios.sim.han", "radios.sim.spec", "radios.sim"}
    assert imports_of(ROOT / "radios" / "sim" / "han.py", known) >= {"radios.sim.spec"}


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_the_daemons_parts_do_not_reach_back_into_its_lifecycle() -> None:
    """han_ota/daemon/ is composed, not a class split over modules: the parts (journal,
    recovery, status, handlers, ...) are given what they need, and none imports the
    Daemon that owns them."""
    edges = graph()
    parts = {name for name in edges if name.startswith("han_ota.daemon.") and name != "han_ota.daemon.lifecycle"}
    assert {"han_ota.daemon.journal", "han_ota.daemon.recovery", "han_ota.daemon.status", "han_ota.daemon.handlers"} <= parts
    assert {name: edges[name] & {"han_ota.daemon", "han_ota.daemon.lifecycle"} for name in parts} == {name: set() for name in parts}
