"""gazerm's imports point one way (the layers of ARCHITECTURE.md): no two of its subpackages or top-level
modules import each other, directly or round a longer loop. Lazy imports inside functions count too: a
cycle there is still a knot."""

from __future__ import annotations

import ast
from collections import defaultdict
from itertools import pairwise
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gazerm"


def component(module: str) -> str:
    """``gazerm.train.loop`` → ``train``; ``gazerm.config`` → ``config``."""
    return module.split(".")[1]


def import_graph() -> dict[str, dict[str, str]]:
    """component → {imported component: the first file that imports it}."""
    graph: dict[str, dict[str, str]] = defaultdict(dict)
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        source = component(".".join(relative.parts)) if len(relative.parts) > 1 else None
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                if name.startswith("gazerm.") and component(name) != source:
                    graph[source].setdefault(component(name), str(path.relative_to(PACKAGE.parent)))
    return graph


def find_cycle(graph: dict[str, dict[str, str]]) -> list[str] | None:
    """One import cycle as [a, b, …, a], or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in graph.get(node, {}):
            if state.get(target) == "open":
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in list(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles_between_gazerm_components():
    graph = import_graph()
    cycle = find_cycle(graph)
    where = [f"{a} → {b} ({graph[a][b]})" for a, b in pairwise(cycle)] if cycle else []
    assert cycle is None, "import cycle: " + "; ".join(where)


def test_the_cycle_finder_finds_a_cycle():
    graph = {"data": {"features": "x"}, "features": {"model": "y"}, "model": {"data": "z"}}
    assert find_cycle(graph) == ["data", "features", "model", "data"]
    assert find_cycle({"train": {"model": "a"}, "model": {"features": "b"}}) is None


def test_the_prepare_configs_are_imported_from_their_home():
    """``gazerm.data.config`` holds the prepare configs; ``gazerm.data.prepare`` only uses them, so an
    import of one from there would break when prepare stops importing it."""
    home = "gazerm.data.config"
    defined = {
        node.name
        for node in ast.parse((PACKAGE / "data" / "config.py").read_text()).body
        if isinstance(node, ast.ClassDef | ast.FunctionDef)
    }
    elsewhere = []
    for root in ("gazerm", "tests", "benchmarks"):
        for path in sorted((PACKAGE.parent / root).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gazerm."):
                    names = {alias.name for alias in node.names} & defined
                    if node.module != home and names:
                        elsewhere.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {sorted(names)}")
    assert elsewhere == [], f"import these from {home}: {elsewhere}"
