"""Workspace rules on the source itself (AST, no imports): one home for starting servers, no import cycles.

* ``free_port`` is defined only in forkcast_devservers.ports, and a ``"redis-server"`` command line is written only
  in forkcast_devservers (issue 17.2: it was defined seven times, the command line four). Each finding names
  ``file:line``.
* No import cycle between the modules of any workspace member's package (issue 17.5): the graph of every
  ``import``/``from ... import`` between a package's own modules, ``if TYPE_CHECKING:`` blocks left out, has no
  strongly connected component of more than one module (nor a module importing itself).

Each rule has a twin that feeds it a synthetic offender, so a rule that stopped seeing anything would fail.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The package and its own tests; and this file, which names what it looks for.
ALLOWED = (ROOT / "devservers", Path(__file__).resolve())
SKIP_DIRS = {".venv", ".tools", ".local", ".git", "node_modules", "__pycache__", "data", "runs"}


def python_files(root: Path) -> Iterator[Path]:
    """Every .py file under ``root``, virtual environments and state folders left out."""
    for path in sorted(root.rglob("*.py")):
        if not SKIP_DIRS.intersection(path.relative_to(root).parts):
            yield path


def server_start_copies(root: Path, allowed: tuple[Path, ...]) -> list[str]:
    """``file:line what`` for each ``def free_port`` and each ``"redis-server"`` literal outside ``allowed``."""
    found = []
    for path in python_files(root):
        if any(path == a or path.is_relative_to(a) for a in allowed):
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        where = path.relative_to(root)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "free_port":
                found.append(f"{where}:{node.lineno} def free_port")
            elif isinstance(node, ast.Constant) and node.value == "redis-server":
                found.append(f'{where}:{node.lineno} "redis-server"')
    return found


def members(root: Path) -> list[Path]:
    """The ``src/<package>`` folders of the workspace members named in the root pyproject.toml."""
    config = tomllib.loads((root / "pyproject.toml").read_text())
    packages = []
    for member in config["tool"]["uv"]["workspace"]["members"]:
        src = root / member / "src"
        packages += (
            [p for p in sorted(src.iterdir()) if (p / "__init__.py").is_file()] if src.is_dir() else []
        )
    return packages


def _module_name(package: Path, path: Path) -> str:
    parts = [package.name, *path.relative_to(package).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[str, str | None, int]]:
    """(module, imported name or None, line) of every import outside ``if TYPE_CHECKING:`` blocks."""
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        if _type_checking_only(node):
            continue
        todo.extend(ast.iter_child_nodes(node))
        if isinstance(node, ast.Import):
            yield from ((alias.name, None, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield from ((target, alias.name, node.lineno) for alias in node.names)


def import_graph(package: Path) -> dict[str, dict[str, int]]:
    """module -> {imported module of the same package: line of the first such import}."""
    modules = {_module_name(package, p): p for p in sorted(package.rglob("*.py"))}
    graph: dict[str, dict[str, int]] = {m: {} for m in modules}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for target, name, line in _imports(tree, module, path.name == "__init__.py"):
            # `from pkg import mod` depends on the module pkg.mod; `from pkg.mod import func` on pkg.mod; a package's
            # own __init__ is a dependency only when a name defined there is imported.
            imported = f"{target}.{name}" if name is not None and f"{target}.{name}" in modules else target
            if imported in modules and imported != module:
                graph[module].setdefault(imported, line)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def describe(graph: dict[str, dict[str, int]], component: list[str]) -> str:
    """The edges inside one cycle, ``a -> b (line n)``, for the failure message."""
    inside = set(component)
    edges = [f"{a} -> {b} (line {line})" for a in component for b, line in graph[a].items() if b in inside]
    return "; ".join(edges)


# One case per top-level folder, so that a failure names the part (and so its owner) that still holds a copy.
PARTS = sorted(
    p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in SKIP_DIRS
)


@pytest.mark.parametrize("part", PARTS)
def test_free_port_and_the_redis_command_line_live_only_in_devservers(part: str) -> None:
    copies = [f"{part}/{found}" for found in server_start_copies(ROOT / part, ALLOWED)]
    assert not copies, "server-start code outside forkcast_devservers:\n" + "\n".join(copies)


def test_every_python_file_lies_in_a_part_checked_above() -> None:
    assert not [p.name for p in ROOT.glob("*.py")], "a .py file at the root would escape the per-part check"
    assert {"devservers", "localplatform", "monitoring", "registry", "services", "tests"} <= set(PARTS)


def test_the_copy_finder_reports_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "helpers.py").write_text(
        "import socket\n\n\ndef free_port() -> int:\n    return 0\n\n\nARGV = ['redis-server', '--port', '1']\n"
    )
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "ports.py").write_text("def free_port() -> int:\n    return 1\n")
    assert server_start_copies(tmp_path, (tmp_path / "home",)) == [
        "pkg/helpers.py:4 def free_port",
        'pkg/helpers.py:8 "redis-server"',
    ]


def test_no_import_cycle_between_the_modules_of_any_package() -> None:
    packages = members(ROOT)
    assert {p.name for p in packages} >= {"forkcast_devservers", "forkcast_contract", "forkcast_retrain"}
    problems = []
    for package in packages:
        graph = import_graph(package)
        problems += [f"{package.name}: {describe(graph, c)}" for c in cycles(graph)]
    assert not problems, "import cycles:\n" + "\n".join(problems)


def test_the_cycle_finder_sees_a_synthetic_cycle(tmp_path: Path) -> None:
    pkg = tmp_path / "fakepkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from fakepkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from .. import c\n")
    (pkg / "c.py").write_text("import fakepkg.a\n")
    (pkg / "d.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fakepkg import a\n"
    )
    (pkg / "e.py").write_text("from fakepkg.a import something\nfrom fakepkg import sub\n")
    graph = import_graph(pkg)
    assert cycles(graph) == [["fakepkg.a", "fakepkg.c", "fakepkg.sub.b"]]
    assert graph["fakepkg.d"] == {}, "an import under TYPE_CHECKING is not a runtime edge"
    assert graph["fakepkg.e"] == {"fakepkg.a": 1, "fakepkg.sub": 2}
    assert describe(graph, cycles(graph)[0]) == (
        "fakepkg.a -> fakepkg.sub.b (line 1); fakepkg.c -> fakepkg.a (line 1); fakepkg.sub.b -> fakepkg.c (line 1)"
    )
