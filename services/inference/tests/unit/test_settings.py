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


@pytest.mark.parametrize(
    ("pins", "refused"),
    [
        ({}, "FORKCAST_MODEL_SHA256, FORKCAST_MODEL_MANIFEST_SHA256"),
        ({"FORKCAST_MODEL_SHA256": "a" * 64}, "FORKCAST_MODEL_MANIFEST_SHA256"),
        ({"FORKCAST_MODEL_MANIFEST_SHA256": "b" * 64}, "FORKCAST_MODEL_SHA256"),
    ],
    ids=["no-pins", "no-manifest-pin", "no-model-pin"],
)
def test_production_refuses_a_release_without_both_pins(
    monkeypatch: pytest.MonkeyPatch, pins: dict[str, str], refused: str
) -> None:
    """Outside local a release names its model and manifest by sha256 (issue 18.6); a missing pin is named."""
    from pydantic import ValidationError

    monkeypatch.setenv("FORKCAST_ENVIRONMENT", "production")
    monkeypatch.setenv("REDIS_URL", "redis://features:6379/0")
    monkeypatch.setenv("FORKCAST_EVENTS_REDIS_URL", "redis://events:6379/0")
    monkeypatch.setenv("FORKCAST_MODEL_URI", "s3://forkcast-models/v1/")
    for name in ("FORKCAST_MODEL_SHA256", "FORKCAST_MODEL_MANIFEST_SHA256"):
        monkeypatch.delenv(name, raising=False)
    for name, value in pins.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(
        ValidationError, match=f"development defaults: {refused}$|development defaults: {refused} "
    ):
        InferenceSettings()


def test_production_serves_a_pinned_release(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORKCAST_ENVIRONMENT", "production")
    monkeypatch.setenv("REDIS_URL", "redis://features:6379/0")
    monkeypatch.setenv("FORKCAST_EVENTS_REDIS_URL", "redis://events:6379/0")
    monkeypatch.setenv("FORKCAST_MODEL_URI", "s3://forkcast-models/v1/")
    monkeypatch.setenv("FORKCAST_MODEL_SHA256", "a" * 64)
    monkeypatch.setenv("FORKCAST_MODEL_MANIFEST_SHA256", "b" * 64)
    assert InferenceSettings().unsafe_defaults() == []
