"""The ``forkcast-data`` command line: exit codes and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from forkcast_data.cli import main


def test_generate_then_describe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "d"
    args = [
        "generate",
        "--out",
        str(out),
        "--users",
        "300",
        "--restaurants",
        "1000",
        "--rows-per-file",
        "500",
    ]
    assert main([*args, "--train-files", "2", "--test-files", "1", "--requests", "5", "--no-progress"]) == 0
    assert main(["describe", str(out)]) == 0
    text = capsys.readouterr().out
    assert "train rows   1,000 in 2 files" in text
    assert "fingerprint" in text


def test_unknown_preset_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--preset", "huge", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "forkcast-data: error: unknown preset 'huge': choose one of tiny, small, full"


def test_invalid_size_override_names_the_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--out", str(tmp_path), "--users", "0"]) == 2
    assert "--users" in capsys.readouterr().err


def test_describe_refuses_an_incomplete_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["describe", str(tmp_path)]) == 1
    assert "not a complete forkcast dataset" in capsys.readouterr().err
