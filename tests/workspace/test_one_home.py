"""Workspace rules on the source itself (AST, no imports): one home for starting servers, no import cycles.

* Starting a real server is written only in forkcast_devservers (issue 17.2: ``free_port`` was defined seven times,
  the redis-server command line four). Outside it the finder reports each ``def free_port``, each
  ``"redis-server"`` literal, each port picked by binding port 0 (``s.bind(("127.0.0.1", 0))``, a ``free_port``
  copy), each ``subprocess.Popen`` (``forkcast_devservers.process.spawn`` starts, logs and stops by PID + start
  time), each hand-written readiness poll (a ``while`` loop that sleeps and probes a server: ``urlopen``, a Redis
  ``ping``, a TCP connect, ``requests``/``httpx`` GET, devservers' probes) and each copy of ``wait_until`` (a
  function whose sleeping loop calls its own callable argument against a ``time.monotonic()`` deadline). A
  finding names ``file:line``, the top-level function or class holding it, and what it is. ``PURPOSEFUL`` lists,
  each with its reason, the few that are not a server start (a socket held open as a blackhole, a batch command
  killed mid-run); an entry that no longer matches anything fails too, so the list stays exact.
* No import cycle between the modules of any workspace member's package (issue 17.5): the graph of every
  ``import``/``from ... import`` between a package's own modules, ``if TYPE_CHECKING:`` blocks left out, has no
  strongly connected component of more than one module (nor a module importing itself).

Each rule has a twin that feeds it a synthetic offender, so a rule that stopped seeing anything would fail.
"""

from __future__ import annotations

import ast
import functools
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


# Calls that ask a server whether it is up: a loop that sleeps between them is a readiness wait.
PROBE_CALLS = {"urlopen", "ping", "create_connection", "connect_ex", "http_ok", "tcp_ok", "redis_ping"}
HTTP_CLIENTS = {"requests", "httpx"}

# Findings outside forkcast_devservers that are not a server start, keyed (file, top-level owner, what), with why.
PURPOSEFUL: dict[tuple[str, str, str], str] = {
    # Sockets a test holds open on purpose: the port is the fault under test, not a free port handed on.
    (
        "services/gateway/tests/integration/test_auth_and_limits.py",
        "test_a_hung_redis_does_not_queue_requests_behind_its_timeout",
        "bind(port 0)",
    ): "a listener that accepts and never answers (Redis hung), held open for the whole test",
    ("services/gateway/tests/integration/test_dns_balancing.py", "DnsStub", "bind(port 0)"): (
        "the in-process UDP DNS stub's own socket, kept bound while it serves"
    ),
    (
        "services/gateway/tests/integration/test_forwarding.py",
        "test_connect_timeout_is_retried_on_another_endpoint",
        "bind(port 0)",
    ): "a blackhole whose full accept queue drops SYNs: the connect timeout under test",
    ("services/inference/tests/integration/test_cluster_serving.py", "silent_node", "bind(port 0)"): (
        "a listener that accepts and never answers (a stalled Cluster node), held open for the whole test"
    ),
    (
        "localplatform/tests/e2e/test_platform.py",
        "test_a_taken_port_falls_back_to_a_free_one",
        "bind(port 0)",
    ): ("a port held taken while the supervisor must pick another"),
    # Processes that are not servers: commands killed mid-run, measured with wait4, or a stranger to stop().
    (
        "featurestore/tests/integration/test_loader.py",
        "test_killed_loader_leaves_live_untouched_and_rerun_finishes",
        "subprocess.Popen",
    ): "the loader CLI, SIGKILLed mid-load by the test",
    ("lake/tests/integration/test_compact_kill.py", "_compact", "subprocess.Popen"): (
        "the compaction CLI, killed mid-commit by the test"
    ),
    (
        "lake/tests/integration/test_concurrent_writers.py",
        "test_two_processes_appending_at_once_land_every_commit_exactly_once",
        "subprocess.Popen",
    ): "two writer processes racing on one Delta table, run to their end",
    (
        "lake/tests/integration/test_retention_s3.py",
        "test_maintain_beside_a_writer_loses_no_row_and_reports_stored_bytes",
        "subprocess.Popen",
    ): "a writer process beside maintenance, run to its end",
    ("lake/benchmarks/bench_snapshot_read.py", "_measure", "subprocess.Popen"): (
        "a read command run to its end; os.wait4 gives its own CPU time and peak RSS"
    ),
    ("pipelines/retrain/benchmarks/bench_train.py", "full_run", "subprocess.Popen"): (
        "a training run to its end; os.wait4 gives its own peak RSS"
    ),
    (
        "pipelines/retrain/tests/integration/test_distributed.py",
        "test_two_agents_with_the_workflow_pods_command_train_together_and_pod_0_keeps_the_run",
        "subprocess.Popen",
    ): "two torchrun agents run to their end, their output read with communicate()",
    (
        "localplatform/tests/e2e/test_platform.py",
        "test_z_down_stops_every_process_it_started_and_nothing_else",
        "subprocess.Popen",
    ): "a bystander `sleep` that `make down` must leave alone: deliberately not started through devservers",
    # A drill's stage wait: it returns the check's value and raises the DrillError a drill report names; it waits
    # on drill outcomes (an alert fired, a rollout phase), not on a server coming up.
    ("localplatform/src/forkcast_local/timeline.py", "wait", "wait_until copy"): (
        "a drill-stage wait returning the value it waited for, failing with DrillError"
    ),
}


def _owners(tree: ast.Module) -> dict[int, str]:
    """id(node) -> the name of the top-level function or class that holds it ("<module>" at module level)."""
    owner: dict[int, str] = {}
    for top in tree.body:
        name = (
            top.name if isinstance(top, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) else "<module>"
        )
        for node in ast.walk(top):
            owner[id(node)] = name
    return owner


def _called(node: ast.Call) -> str:
    """The called name: ``f`` for ``f(...)``, ``attr`` for ``x.attr(...)``."""
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _is_probe(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in HTTP_CLIENTS:
        return True
    return _called(node) in PROBE_CALLS


def _sleeps(loop: ast.While, injected: frozenset[str] = frozenset()) -> bool:
    """True when ``loop`` sleeps for real: ``time.sleep``/``sleep``, not a ``sleep`` the caller passed in (a
    function with an injected clock and sleep is tested without waiting and polls no local server)."""
    return any(
        isinstance(n, ast.Call)
        and _called(n) == "sleep"
        and not (isinstance(n.func, ast.Name) and n.func.id in injected)
        for n in ast.walk(loop)
    )


def _what(node: ast.AST) -> str | None:
    """What server-start code ``node`` is, or None."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        if node.name == "free_port":
            return "def free_port"
        params = frozenset(a.arg for a in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs))
        for loop in (n for n in ast.walk(node) if isinstance(n, ast.While)):
            calls = {
                n.func.id for n in ast.walk(loop) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
            }
            # A loop that calls its own argument and sleeps for real against a monotonic deadline.
            if params & calls and _sleeps(loop, params) and "monotonic" in ast.unparse(node):
                return "wait_until copy"
        return None
    if isinstance(node, ast.Constant) and node.value == "redis-server":
        return '"redis-server"'
    if isinstance(node, ast.While) and _sleeps(node) and any(_is_probe(n) for n in ast.walk(node)):
        return "readiness poll"
    if not isinstance(node, ast.Call):
        return None
    if _called(node) == "Popen":
        return "subprocess.Popen"
    address = node.args[0] if _called(node) == "bind" and node.args else None
    if isinstance(address, ast.Tuple) and len(address.elts) == 2:
        port = address.elts[1]
        if isinstance(port, ast.Constant) and port.value == 0:
            return "bind(port 0)"
    return None


def findings(root: Path, allowed: tuple[Path, ...]) -> list[tuple[str, str, int, str]]:
    """(file, top-level owner, line, what) for each piece of server-start code outside ``allowed``."""
    found = []
    for path in python_files(root):
        if any(path == a or path.is_relative_to(a) for a in allowed):
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        owner = _owners(tree)
        for node in ast.walk(tree):
            what = _what(node)
            if what is not None and isinstance(node, ast.stmt | ast.expr):
                found.append(
                    (str(path.relative_to(root)), owner.get(id(node), "<module>"), node.lineno, what)
                )
    return sorted(found, key=lambda f: (f[0], f[2], f[3]))


@functools.cache
def tree_findings() -> tuple[tuple[str, str, int, str], ...]:
    """``findings`` of the whole checkout, walked once for every test of this module."""
    return tuple(findings(ROOT, ALLOWED))


def server_start_copies(
    root: Path, allowed: tuple[Path, ...], purposeful: dict[tuple[str, str, str], str] | None = None
) -> list[str]:
    """``file:line what (in owner)`` for each finding outside ``allowed`` that ``purposeful`` does not excuse."""
    excused = purposeful or {}
    return [
        f"{where}:{line} {what} (in {owner})"
        for where, owner, line, what in findings(root, allowed)
        if (where, owner, what) not in excused
    ]


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
def test_server_start_code_lives_only_in_devservers(part: str) -> None:
    copies = [
        f"{where}:{line} {what} (in {owner})"
        for where, owner, line, what in tree_findings()
        if where.startswith(f"{part}/") and (where, owner, what) not in PURPOSEFUL
    ]
    assert not copies, (
        "server-start code outside forkcast_devservers (use its free_port, spawn/stop, wait_until and probes, "
        "or add a commented PURPOSEFUL entry if this is no server start):\n" + "\n".join(copies)
    )


def test_every_purposeful_exception_still_matches_something() -> None:
    seen = {(where, owner, what) for where, owner, _, what in tree_findings()}
    stale = sorted(set(PURPOSEFUL) - seen)
    assert not stale, f"PURPOSEFUL entries that match nothing any more (remove them): {stale}"


def test_every_python_file_lies_in_a_part_checked_above() -> None:
    assert not [p.name for p in ROOT.glob("*.py")], "a .py file at the root would escape the per-part check"
    assert {"devservers", "localplatform", "monitoring", "registry", "services", "tests"} <= set(PARTS)


SYNTHETIC_COPIES = """\
import socket, subprocess, time, urllib.request


def free_port() -> int:
    return 0


ARGV = ['redis-server', '--port', '1']


def start_server(exe: str) -> subprocess.Popen[bytes]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([exe, str(port)])
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz")
            return proc
        except OSError:
            time.sleep(0.05)


def _wait(cond, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline
        time.sleep(0.05)


class Blackhole:
    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
"""


def test_the_copy_finder_reports_file_line_owner_and_what(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "helpers.py").write_text(SYNTHETIC_COPIES)
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "ports.py").write_text("def free_port() -> int:\n    return 1\n")
    excused = {("pkg/helpers.py", "Blackhole", "bind(port 0)"): "a socket held open on purpose"}
    assert server_start_copies(tmp_path, (tmp_path / "home",), excused) == [
        "pkg/helpers.py:4 def free_port (in free_port)",
        'pkg/helpers.py:8 "redis-server" (in <module>)',
        "pkg/helpers.py:13 bind(port 0) (in start_server)",
        "pkg/helpers.py:15 subprocess.Popen (in start_server)",
        "pkg/helpers.py:16 readiness poll (in start_server)",
        "pkg/helpers.py:24 wait_until copy (in _wait)",
    ]
    # Without the exception the held-open socket is reported too: the allow-list, not the finder, excuses it.
    assert (
        server_start_copies(tmp_path, (tmp_path / "home",))[-1]
        == "pkg/helpers.py:34 bind(port 0) (in Blackhole)"
    )


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
