"""Faults: missing bucket, wrong credentials, unreachable S3, bad version ids; each a clear, bounded error."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from forkcast_devservers.ports import free_port
from forkcast_registry.errors import BucketMissingError, RegistryUnavailableError, VersionNotFoundError
from forkcast_registry.publish import new_version_id
from forkcast_registry.registry import ModelRegistry
from forkcast_registry.settings import RegistrySettings


def test_settings_come_from_the_standard_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    monkeypatch.setenv("FORKCAST_BUCKET", "models-bucket")
    monkeypatch.setenv("FORKCAST_MODEL_CACHE", str(tmp_path))
    s = RegistrySettings()
    assert (s.endpoint_url, s.access_key_id, s.secret_access_key) == ("http://127.0.0.1:1", "k", "s")
    assert (s.region, s.bucket, s.cache_dir) == ("eu-west-3", "models-bucket", tmp_path)


def test_missing_bucket_is_created_only_when_asked(settings: RegistrySettings) -> None:
    registry = ModelRegistry.from_settings(settings)
    with pytest.raises(BucketMissingError, match="--create-bucket"):
        registry.store.ensure_bucket(create=False)
    registry.store.ensure_bucket(create=True)
    registry.store.ensure_bucket(create=False)


def test_wrong_credentials_are_a_clear_error(registry: ModelRegistry, settings: RegistrySettings) -> None:
    bad = ModelRegistry.from_settings(settings.model_copy(update={"secret_access_key": "wrong"}))
    with pytest.raises(RegistryUnavailableError, match="refused the credentials"):
        bad.list_versions()


def test_unreachable_s3_fails_within_a_bounded_time(settings: RegistrySettings) -> None:
    dead = settings.model_copy(
        update={
            "endpoint_url": f"http://127.0.0.1:{free_port()}",
            "max_attempts": 3,
            "connect_timeout_s": 0.5,
        }
    )
    registry = ModelRegistry.from_settings(dead)
    started = time.perf_counter()
    with pytest.raises(RegistryUnavailableError, match="unreachable"):
        registry.describe(new_version_id("d", "c", "m"))
    assert time.perf_counter() - started < 15


def test_malformed_version_id_is_refused_before_any_s3_call(registry: ModelRegistry) -> None:
    with pytest.raises(VersionNotFoundError, match="not a version id"):
        registry.describe("../../etc")
