"""Fixtures: a client of the session's real redis-server (``redis_server``, from the forkcast_devservers pytest
plugin), emptied before each test, and tiny generated datasets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from forkcast_data.generate import GenerateRequest, generate
from forkcast_data.presets import preset_sizes
from forkcast_devservers.servers import RedisServer


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client of the session's server, emptied before each test."""
    c = redis.Redis(port=redis_server.port, socket_timeout=30)
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
def redis_url(redis_server: RedisServer, client: redis.Redis) -> str:
    """URL of the (emptied) test server, for code under test that connects by itself."""
    return redis_server.url
