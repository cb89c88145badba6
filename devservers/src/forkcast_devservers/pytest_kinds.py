"""Marks every test with its kind, taken from the folder it lies in, so `pytest -m unit` (or `integration`, `e2e`,
`model_behaviour`) selects by kind across the whole workspace. Registered for every test run as a ``pytest11``
entry point, like the fixtures of ``pytest_plugin``; the markers themselves are registered in the root
pyproject.toml (``--strict-markers`` refuses an unregistered one).

A part whose tests are of several kinds splits its ``tests/`` folder into one subfolder per kind (Made-With-ML's
tests/code, tests/data, tests/model): ``unit/`` runs in the test process alone (no server, no subprocess),
``integration/`` starts real servers or programs (redis-server, weed, mlflow, prometheus, kubectl, git, a service
process), ``e2e/`` drives a whole flow across parts, ``model_behaviour/`` holds the behavioural tests of a trained
model. A part of a single kind keeps a flat ``tests/`` folder and its tests carry no kind marker.
tests/workspace/test_test_layout.py checks that no test file of a split part lies outside a kind folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest

KINDS = ("unit", "integration", "e2e", "model_behaviour")


def kind_of(path: Path) -> str | None:
    """The kind folder right below a ``tests`` folder on ``path``, or None when the file lies in none."""
    parts = path.parts
    for i, name in enumerate(parts[:-1]):
        if name == "tests" and parts[i + 1] in KINDS:
            return parts[i + 1]
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Add the kind marker to every test that lies in a kind folder; then put the long files first."""
    for item in items:
        kind = kind_of(item.path)
        if kind is not None:
            item.add_marker(kind)
    items[:] = longest_first(items)


def longest_first(items: list[pytest.Item]) -> list[pytest.Item]:
    """The items with whole files moved to the front when they are likely long: ``e2e`` files, then files holding a
    ``slow`` test, then the rest, each group in its collected order (a stable sort, so every xdist worker gets the
    same order, which xdist requires).

    Why: ``make test`` hands whole files to three xdist workers (``--dist loadfile``) in this order
    (``--no-loadscope-reorder``; xdist's default orders files by their number of tests, which put the one-test
    drills, 4 minutes each, last and left two workers idle at the end). Longest first is the classic bound for
    list scheduling (Graham 1969: makespan at most 4/3 of the optimum).
    """

    def rank(item: pytest.Item) -> int:
        if kind_of(item.path) == "e2e":
            return 0
        return 1 if item.path in slow_files else 2

    slow_files = {item.path for item in items if item.get_closest_marker("slow") is not None}
    return sorted(items, key=rank)
