"""Fixtures: a fresh bucket and cache per test on the session's real SeaweedFS (the ``seaweed`` fixture of
forkcast_devservers' pytest plugin)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from forkcast_devservers.servers import Seaweed
from forkcast_registry.registry import ModelRegistry
from forkcast_registry.settings import RegistrySettings

_buckets = itertools.count()


@pytest.fixture
def settings(seaweed: Seaweed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RegistrySettings:
    for name, value in seaweed.client_env(f"registry-test-{next(_buckets)}").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FORKCAST_MODEL_CACHE", str(tmp_path / "cache"))
    return RegistrySettings()


@pytest.fixture
def registry(settings: RegistrySettings) -> ModelRegistry:
    reg = ModelRegistry.from_settings(settings)
    reg.store.ensure_bucket(create=True)
    return reg
