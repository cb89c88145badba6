"""Fixtures: a client of the session's real redis-server (``redis_server``, from the forkcast_devservers pytest
plugin), emptied before each test, and tiny generated datasets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from forkcast_data.testing import generate_dataset, tiny_data
from forkcast_devservers.servers import RedisServer

__all__ = ["tiny_data"]  # the shared session fixture, re-exported for this folder's tests


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client of the session's server, emptied before each test."""
    c = redis.Redis(port=redis_server.port, socket_timeout=30)
    c.flushall()
    yield c
    c.config_set("maxmemory", "0")
    c.close()


@pytest.fixture(scope="session")
def tiny_drifted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("tiny_drift") / "data", drift=1.0)


@pytest.fixture
def redis_url(redis_server: RedisServer, client: redis.Redis) -> str:
    """URL of the (emptied) test server, for code under test that connects by itself."""
    return redis_server.url
