"""Inference settings: what the environment may say and how it is normalised."""

from __future__ import annotations

from pathlib import Path

import pytest

from forkcast_inference.settings import InferenceSettings


def test_a_relative_model_dir_is_taken_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FORKCAST_ENVIRONMENT", "local")  # production refuses a model directory
    monkeypatch.setenv("FORKCAST_MODEL_DIR", "runs/model")
    assert InferenceSettings().model_dir == tmp_path / "runs" / "model"


def test_production_refuses_the_development_model_dir_and_redis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FORKCAST_ENVIRONMENT unset is production now (issue 18.6): the development settings are refused."""
    from pydantic import ValidationError

    monkeypatch.delenv("FORKCAST_ENVIRONMENT", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("FORKCAST_MODEL_DIR", str(tmp_path))
    with pytest.raises(ValidationError, match="development defaults: FORKCAST_MODEL_DIR, REDIS_URL"):
        InferenceSettings()


def test_events_go_to_the_events_redis_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORKCAST_ENVIRONMENT", "local")
    monkeypatch.setenv("REDIS_URL", "redis://features:6379/0")
    monkeypatch.setenv("FORKCAST_EVENTS_REDIS_URL", "redis://events:6379/0")
    settings = InferenceSettings()
    assert (settings.redis_url, settings.events_url) == ("redis://features:6379/0", "redis://events:6379/0")
