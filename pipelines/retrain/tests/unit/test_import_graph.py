"""No import cycle between the modules of forkcast_retrain (issue 17 §5: cluster.py and workflow.py had one).

Every import counts, function-level ones included: a lazy import only hides a cycle from start-up, it still
makes each module need the other. The graph is read from the source with ast, nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import forkcast_retrain

PACKAGE = "forkcast_retrain"
SOURCE = Path(forkcast_retrain.__file__).parent


def import_graph(source: Path, package: str) -> dict[str, set[str]]:
    """module -> the modules of ``package`` it imports (``from package import x`` counts as package.x when x is a
    module of it)."""
    modules = {p.stem for p in source.glob("*.py") if p.stem != "__init__"}
    graph: dict[str, set[str]] = {}
    for name in modules:
        edges: set[str] = set()
        for node in ast.walk(ast.parse((source / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == package:
                    edges |= {a.name for a in node.names if a.name in modules}
                elif node.module.startswith(f"{package}."):
                    edges.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                edges |= {a.name.split(".")[1] for a in node.names if a.name.startswith(f"{package}.")}
        graph[name] = edges - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One path per cycle found by depth-first search (each as the modules in import order, first repeated)."""
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    return found


def test_forkcast_retrain_has_no_import_cycle() -> None:
    graph = import_graph(SOURCE, PACKAGE)
    assert {"cluster", "workflow", "workflow_layout"} <= graph.keys()
    assert cycles(graph) == []
    assert "workflow" not in graph["cluster"] and "workflow_layout" in graph["cluster"]


def test_the_cycle_the_layout_module_broke_would_be_found(tmp_path: Path) -> None:
    """Twin: the two imports cluster.py and workflow.py had (one of them inside a function)."""
    pkg = tmp_path / PACKAGE
    pkg.mkdir()
    (pkg / "cluster.py").write_text("from forkcast_retrain.workflow import run_key\n")
    (pkg / "workflow.py").write_text("def main():\n    from forkcast_retrain import cluster\n")
    assert cycles(import_graph(pkg, PACKAGE)) == [["cluster", "workflow", "cluster"]]
