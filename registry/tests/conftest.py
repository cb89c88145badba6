"""Fixtures: one real SeaweedFS for the whole session, a fresh bucket and cache per test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from forkcast_registry.registry import ModelRegistry
from forkcast_registry.settings import RegistrySettings
from forkcast_registry.testing import SeaweedServer, start_seaweed

_buckets = itertools.count()


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    server = start_seaweed(tmp_path_factory.mktemp("seaweed"))
    yield server
    server.stop()


@pytest.fixture
def settings(seaweed: SeaweedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RegistrySettings:
    for name, value in seaweed.env(f"registry-test-{next(_buckets)}").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FORKCAST_MODEL_CACHE", str(tmp_path / "cache"))
    return RegistrySettings()


@pytest.fixture
def registry(settings: RegistrySettings) -> ModelRegistry:
    reg = ModelRegistry.from_settings(settings)
    reg.store.ensure_bucket(create=True)
    return reg
