"""pytest fixtures for real servers on 127.0.0.1, registered for every test run as the ``pytest11`` entry point.

A server's data lives under pytest's temporary directory and the server is stopped by its PID at the end of its
scope. A missing program is an error naming the package that installs it, never a skip: ``make setup`` and
``make system-packages`` install every one of them.

* ``redis_server``: one redis-server for the session (no persistence). Tests that share it must not rely on it
  being empty unless they flush it; a test that needs its own (ACLs, persistence, a server it may kill) asks
  ``redis_server_factory``.
* ``redis_server_factory``: ``start(**RedisServer options) -> RedisServer``, each stopped at the end of the test.
* ``redis_cluster``: a 3-master Redis Cluster for the session.
* ``seaweed``: one ``weed mini`` (S3) for the session; ``mlflow``: an mlflow server for the session whose
  artifacts go to the ``mlflow-artifacts`` bucket of ``seaweed``.
* ``prometheus_server`` / ``alertmanager_server``: ``start(config, **options)``, stopped at the end of the test;
  ``prometheus`` is the same factory under the name issue 17 gives it.
* ``free_port``: a free port on 127.0.0.1 below the ephemeral range.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from forkcast_devservers.binaries import AMTOOL, PROMTOOL, locate
from forkcast_devservers.ports import free_port as _free_port
from forkcast_devservers.servers import Alertmanager, Mlflow, Prometheus, RedisCluster, RedisServer, Seaweed

MLFLOW_BUCKET = "mlflow-artifacts"
_names = itertools.count()


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool's path; a test that needs it fails with the install hint when it is missing (never skips)."""
    return locate(PROMTOOL)


@pytest.fixture(scope="session")
def amtool() -> str:
    """amtool's path; fails with the install hint when it is missing."""
    return locate(AMTOOL)


@pytest.fixture
def free_port() -> int:
    """A port free on 127.0.0.1 now, below the kernel's ephemeral range."""
    return _free_port()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server shared by the session."""
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., RedisServer]]:
    """Start redis-servers with any ``RedisServer`` options; all are stopped when the test ends."""
    started: list[RedisServer] = []

    def start(**options: Any) -> RedisServer:
        server = RedisServer(tmp_path_factory.mktemp(f"redis-{next(_names)}"), **options)
        started.append(server.start())
        return server

    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A 3-master Redis Cluster shared by the session."""
    with RedisCluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    """One ``weed mini`` (S3 with conditional puts) shared by the session."""
    with Seaweed(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


@pytest.fixture(scope="session")
def mlflow(tmp_path_factory: pytest.TempPathFactory, seaweed: Seaweed) -> Iterator[Mlflow]:
    """An mlflow server shared by the session, artifacts in ``s3://mlflow-artifacts/`` on ``seaweed``."""
    with Mlflow.on(seaweed, tmp_path_factory.mktemp("mlflow"), bucket=MLFLOW_BUCKET) as server:
        yield server


@pytest.fixture
def prometheus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Prometheus]]:
    """Start a Prometheus with a config file (and any ``Prometheus`` options); stopped when the test ends."""
    started: list[Prometheus] = []

    def start(config: Path, **options: Any) -> Prometheus:
        server = Prometheus(tmp_path_factory.mktemp(f"prometheus-{next(_names)}"), config=config, **options)
        started.append(server.start())
        return server

    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture
def prometheus(prometheus_server: Callable[..., Prometheus]) -> Callable[..., Prometheus]:
    """``prometheus_server`` under the fixture name issue 17 lists (``redis_server``, ``seaweed``, ``mlflow``,
    ``prometheus``): the same factory, so a test asking for both gets one set of servers."""
    return prometheus_server


@pytest.fixture
def alertmanager_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Alertmanager]]:
    """Start an Alertmanager with a config file (and any ``Alertmanager`` options); stopped when the test ends."""
    started: list[Alertmanager] = []

    def start(config: Path, **options: Any) -> Alertmanager:
        server = Alertmanager(
            tmp_path_factory.mktemp(f"alertmanager-{next(_names)}"), config=config, **options
        )
        started.append(server.start())
        return server

    yield start
    for server in reversed(started):
        server.stop()
