"""The drill registry: every module of forkcast_local.drills is a scenario with a name, a summary and a runner."""

from __future__ import annotations

import types

import pytest

from forkcast_local import drills


def test_every_drill_module_is_registered_under_its_name() -> None:
    found = drills.registry()
    assert "end-to-end" in found
    for name, drill in found.items():
        assert name == drill.module.NAME
        assert drill.summary and drill.summary == drill.module.__doc__.strip().splitlines()[0]


def test_list_prints_every_drill(capsys: pytest.CaptureFixture[str]) -> None:
    assert drills.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in drills.registry())


def test_an_unknown_drill_is_refused_naming_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert drills.main(["no-such-drill"]) == 2
    assert "no drill 'no-such-drill'; known: " in capsys.readouterr().err


def test_a_module_without_the_protocol_is_an_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    bare = types.ModuleType("forkcast_local.drills.bare", "A drill without a runner.")
    bare.NAME = "bare"  # type: ignore[attr-defined]
    real = drills.importlib.import_module
    monkeypatch.setattr(drills.pkgutil, "iter_modules", lambda path: [types.SimpleNamespace(name="bare")])
    monkeypatch.setattr(
        drills.importlib, "import_module", lambda name: bare if name.endswith(".bare") else real(name)
    )
    with pytest.raises(
        TypeError, match=r"drill module forkcast_local.drills.bare lacks \['add_arguments', 'run'\]"
    ):
        drills.registry()
