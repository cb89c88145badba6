"""Inference settings: what the environment may say and how it is normalised."""

from __future__ import annotations

from pathlib import Path

import pytest

from forkcast_inference.settings import InferenceSettings


def test_a_relative_model_dir_is_taken_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FORKCAST_MODEL_DIR", "runs/model")
    assert InferenceSettings().model_dir == tmp_path / "runs" / "model"
