"""Fixtures: a real redis-server on a free loopback port (forkcast_features.localredis, stopped by PID) and tiny
generated datasets."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from forkcast_data.generate import GenerateRequest, generate
from forkcast_data.presets import preset_sizes
from forkcast_features.localredis import LocalRedis


@pytest.fixture(scope="session")
def redis_server() -> Iterator[LocalRedis]:
    """The package's own throwaway redis-server (free loopback port, stopped by its PID)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed (Debian package redis-server)")
    with LocalRedis() as server:
        yield server


@pytest.fixture
def client(redis_server: LocalRedis) -> Iterator[redis.Redis]:
    """A client of our own server, emptied before each test."""
    c = redis_server.client()
    c.flushall()
    yield c
    c.config_set("maxmemory", "0")
    c.close()


def _tiny(out: Path, drift: float) -> Path:
    generate(
        GenerateRequest(out=out, preset="tiny", sizes=preset_sizes("tiny"), drift=drift, progress=False),
        log=lambda _msg: None,
    )
    return out


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny(tmp_path_factory.mktemp("tiny") / "data", 0.0)


@pytest.fixture(scope="session")
def tiny_drifted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny(tmp_path_factory.mktemp("tiny_drift") / "data", 1.0)


@pytest.fixture
def redis_url(redis_server: LocalRedis, client: redis.Redis) -> str:
    """URL of the (emptied) test server, for code under test that connects by itself."""
    return redis_server.url
