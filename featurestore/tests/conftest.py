"""Fixtures: real redis-server processes on free loopback ports (stopped by PID) and tiny generated datasets."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from forkcast_data.generate import GenerateRequest, generate
from forkcast_data.presets import preset_sizes

REDIS_SERVER = shutil.which("redis-server")
requires_redis = pytest.mark.skipif(
    REDIS_SERVER is None, reason="redis-server not installed (Debian package redis-server)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisProcess:
    """One redis-server we started; only ever stopped through its own PID."""

    def __init__(self, workdir: Path, *extra: str) -> None:
        assert REDIS_SERVER is not None
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(workdir),
                "--save",
                "",
                "--appendonly",
                "no",
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=0.2).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"redis-server on port {self.port} did not start") from None
                time.sleep(0.02)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server not installed (Debian package redis-server)")
    server = RedisProcess(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def client(redis_server: RedisProcess) -> Iterator[redis.Redis]:
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
def redis_url(redis_server: RedisProcess, client: redis.Redis) -> str:
    """URL of the (emptied) test server, for code under test that connects by itself."""
    return redis_server.url
