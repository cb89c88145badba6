"""Workspace rules checked on the lock file and the pytest config: dependency sets per deployable, test discovery.

The serving images must stay small and start fast, so e.g. the inference service may not pull torch, mlflow or
polars, not even transitively.
"""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@cache
def _lock() -> dict[str, dict[str, object]]:
    data = tomllib.loads((ROOT / "uv.lock").read_text())
    return {pkg["name"]: pkg for pkg in data["package"]}


def _closure(name: str) -> set[str]:
    """Every package ``name`` installs, following requested extras."""
    lock, seen, todo = _lock(), set(), [(name, ())]
    while todo:
        pkg_name, extras = todo.pop()
        if (pkg_name, extras) in seen:
            continue
        seen.add((pkg_name, extras))
        pkg = lock[pkg_name]
        deps = list(pkg.get("dependencies", []))  # type: ignore[call-overload]
        optional = pkg.get("optional-dependencies", {})
        for extra in extras:
            deps += optional.get(extra, [])  # type: ignore[union-attr]
        todo += [(d["name"], tuple(d.get("extra", ()))) for d in deps]
    return {n for n, _ in seen}


@pytest.mark.parametrize(
    ("deployable", "forbidden"),
    [
        ("forkcast-inference", {"torch", "mlflow", "polars", "fastapi"}),
        ("forkcast-gateway", {"torch", "mlflow", "polars"}),
        ("forkcast-features", {"torch", "mlflow"}),
        ("forkcast-registry", {"torch", "mlflow", "polars"}),
        ("forkcast-monitoring", {"torch", "mlflow", "polars", "fastapi"}),
        ("forkcast-contract", {"torch", "mlflow", "polars", "redis", "boto3"}),
    ],
)
def test_deployable_does_not_carry_heavy_dependencies(deployable: str, forbidden: set[str]) -> None:
    assert _closure(deployable) & forbidden == set()


def test_trainer_gets_the_cpu_build_of_torch() -> None:
    assert "torch" in _closure("forkcast-retrain")
    torch = _lock()["torch"]
    assert str(torch["version"]).endswith("+cpu")
    assert not {n for n in _closure("forkcast-retrain") if n.startswith("nvidia-")}


def test_every_member_is_in_the_workspace_and_the_lock() -> None:
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for member in root["tool"]["uv"]["workspace"]["members"]:
        name = tomllib.loads((ROOT / member / "pyproject.toml").read_text())["project"]["name"]
        assert name in _lock(), f"{member} ({name}) is missing from uv.lock: run `uv lock`"


def test_every_test_folder_is_collected() -> None:
    """A member's tests must not silently drop out of `make test` (a missing testpaths entry would do that)."""
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    testpaths = set(root["tool"]["pytest"]["ini_options"]["testpaths"])
    for member in root["tool"]["uv"]["workspace"]["members"]:
        if (ROOT / member / "tests").is_dir():
            assert f"{member}/tests" in testpaths, (
                f"{member}/tests is not in [tool.pytest.ini_options] testpaths"
            )
    assert all((ROOT / p).is_dir() for p in testpaths)
