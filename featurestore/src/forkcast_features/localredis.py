"""A throwaway redis-server on a free loopback port, for benchmarks: started here, stopped by its own PID."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import TracebackType

import redis


class LocalRedis:
    """``with LocalRedis() as r: r.client()``; the data directory is a fresh temporary one."""

    def __init__(self, *extra: str) -> None:
        self.extra = extra
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="forkcast-redis-")

    def __enter__(self) -> LocalRedis:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server not found (Debian package redis-server)")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.proc = subprocess.Popen(
            [
                exe,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                self._dir.name,
                "--save",
                "",
                "--appendonly",
                "no",
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client().ping()
                return self
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    self.__exit__(None, None, None)
                    raise
                time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=30)

    def cpu_seconds(self) -> float:
        """The server's own CPU time (user + sys), to charge Redis's share of a benchmark."""
        info = self.client().info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        self._dir.cleanup()


class LocalCluster:
    """Three redis-server masters joined with ``redis-cli --cluster create`` (bus ports = port + 10000)."""

    def __init__(self, masters: int = 3) -> None:
        self.masters = masters
        self.ports: list[int] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self._dir = tempfile.TemporaryDirectory(prefix="forkcast-cluster-")

    @staticmethod
    def _pair_free(port: int) -> bool:
        for p in (port, port + 10000):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    return False
        return True

    def __enter__(self) -> LocalCluster:
        rng = random.Random()
        while len(self.ports) < self.masters:
            p = rng.randrange(20000, 40000)
            if p not in self.ports and self._pair_free(p):
                self.ports.append(p)
        try:
            for p in self.ports:
                d = Path(self._dir.name) / str(p)
                d.mkdir()
                self.procs.append(
                    subprocess.Popen(
                        [
                            "redis-server",
                            "--bind",
                            "127.0.0.1",
                            "--port",
                            str(p),
                            "--dir",
                            str(d),
                            "--save",
                            "",
                            "--appendonly",
                            "no",
                            "--cluster-enabled",
                            "yes",
                            "--cluster-config-file",
                            str(d / "nodes.conf"),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
            for p in self.ports:
                _wait(partial(_pings, p))
            subprocess.run(
                [
                    "redis-cli",
                    "--cluster",
                    "create",
                    *[f"127.0.0.1:{p}" for p in self.ports],
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
            for p in self.ports:
                _wait(partial(_cluster_ok, p))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def cpu_seconds(self) -> float:
        total = 0.0
        for p in self.ports:
            info = redis.Redis(port=p).info("cpu")
            total += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        return total

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
        self._dir.cleanup()


def _wait(check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("redis did not come up")
        time.sleep(0.05)


def _pings(port: int) -> bool:
    return bool(redis.Redis(port=port).ping())


def _cluster_ok(port: int) -> bool:
    return bool(redis.Redis(port=port).cluster("info")["cluster_state"] == "ok")
