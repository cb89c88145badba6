"""The processes of the rollout drill, all on 127.0.0.1 and stopped by PID: Redis, inference, gateway, Prometheus.

Also the two things the drill adds around them: a TCP proxy that delays every command a canary sends to Redis (the
injected fault: the service's own latency histogram sees it, the client only a slower 200), and the client, which
sends real requests through whichever gateway is current and counts every answer that is not a 200.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

# Re-exported: the drill modules reach every process helper through this one module.
from forkcast_devservers.ports import free_port as free_port
from forkcast_devservers.ready import http_ok as http_ok
from forkcast_local.loadgen import request_bodies
from forkcast_monitoring.prometheus_process import stop as stop_process

BIN = Path(sys.executable).parent
PREFIX = "fcdrill"


def redis_argv(port: int, work: Path) -> list[str]:
    """A throwaway redis-server on ``port``: no snapshots, no AOF (a drill's restart loads an explicit SAVE)."""
    return [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(work),
    ]


class Stack:
    """Every process the drill started, by PID, so that ``close`` stops exactly those."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, name: str, argv: list[str], env: dict[str, str], ready: str, timeout_s: float = 60
    ) -> int:
        with (self.work / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                # FORKCAST_ENVIRONMENT defaults to production (issue 18); every drill process is a local one.
                argv,
                env={**os.environ, "FORKCAST_ENVIRONMENT": "local", **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(proc)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}); see {self.work / name}.log")
            if (ready.startswith("redis:") and _redis_up(ready[6:])) or http_ok(ready):
                return proc.pid
            time.sleep(0.1)
        raise RuntimeError(f"{name} not ready in {timeout_s:.0f} s; see {self.work / name}.log")

    def stop(self, pid: int) -> None:
        for proc in [p for p in self.procs if p.pid == pid]:
            stop_process(proc)
            self.procs.remove(proc)

    def close(self) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc.pid)


def _redis_up(port: str) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", int(port)), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(stack: Stack, data: Path) -> str:
    port = free_port()
    stack.start("redis", redis_argv(port, stack.work), {}, f"redis:{port}")
    url = f"redis://127.0.0.1:{port}/0"
    subprocess.run(
        [str(BIN / "forkcast-features"), "load", "--data", str(data), "--activate", "--no-progress"],
        env={**os.environ, "REDIS_URL": url, "FORKCAST_FEATURE_PREFIX": PREFIX},
        check=True,
        capture_output=True,
    )
    return url


def start_inference(stack: Stack, name: str, redis_url: str, model: Path) -> tuple[int, str]:
    port = free_port()
    env = {
        "REDIS_URL": redis_url,
        "FORKCAST_FEATURE_PREFIX": PREFIX,
        "FORKCAST_MODEL_DIR": str(model.resolve()),
        "FORKCAST_HOST": "127.0.0.1",
        "FORKCAST_PORT": str(port),
        "FORKCAST_LOG_LEVEL": "WARNING",
        "FORKCAST_REDIS_TIMEOUT_S": "1.0",
    }
    base = f"http://127.0.0.1:{port}"
    return stack.start(name, [str(BIN / "forkcast-inference")], env, f"{base}/readyz"), base


def start_gateway(stack: Stack, redis_url: str, keys: Path, upstreams: str) -> tuple[int, str]:
    port = free_port()
    env = {
        "REDIS_URL": redis_url,
        "FORKCAST_API_KEYS_FILE": str(keys),
        "FORKCAST_UPSTREAMS": upstreams,
        "FORKCAST_HOST": "127.0.0.1",
        "FORKCAST_PORT": str(port),
        "FORKCAST_ACCESS_LOG": "false",
        "FORKCAST_LOG_LEVEL": "WARNING",
        "FORKCAST_FEATURE_PREFIX": PREFIX,
    }
    base = f"http://127.0.0.1:{port}"
    return stack.start(f"gateway-{port}", [str(BIN / "forkcast-gateway")], env, f"{base}/readyz"), base


class SlowProxy:
    """A loopback TCP proxy that holds every client-to-server chunk ``delay_s`` before passing it on."""

    def __init__(self, target_port: int, delay_s: float) -> None:
        self.target_port, self.delay_s, self.port = target_port, delay_s, free_port()
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self.thread.start()
        started.wait(10)

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", self.port))
        started.set()
        self.loop.run_forever()
        server.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, delay: float) -> None:
            try:
                while chunk := await src.read(65536):
                    if delay:
                        await asyncio.sleep(delay)
                    dst.write(chunk)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, self.delay_s), pipe(up_reader, writer, 0.0))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@dataclass
class Client:
    """Sequential real requests through ``self.gateway`` (swapped between steps), bounded in count and time."""

    data: Path
    api_key: str
    gateway: str
    max_requests: int
    deadline_s: float
    sent: int = 0
    failed: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    stop_event: threading.Event = field(default_factory=threading.Event)
    interval_s: float = 0.0  # pause between requests (0: back to back)

    def run(self) -> None:
        bodies = request_bodies(self.data / "requests.parquet", 2000)
        end = time.monotonic() + self.deadline_s
        conn: http.client.HTTPConnection | None = None
        current = ""
        headers = {"content-type": "application/json", "x-api-key": self.api_key}
        while not self.stop_event.is_set() and self.sent < self.max_requests and time.monotonic() < end:
            if self.gateway != current:  # the old gateway keeps serving until we have left it
                if conn is not None:
                    conn.close()
                current = self.gateway
                host, port = current.removeprefix("http://").split(":")
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
            assert conn is not None
            user, body = bodies[self.sent % len(bodies)]
            self.sent += 1
            try:
                conn.request("POST", f"/recommend/{user}", body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                status = response.status
                version = response.getheader("x-model-version", "?")
            except (OSError, http.client.HTTPException):
                conn.close()
                status, version = 0, "-"
            self.statuses[status] = self.statuses.get(status, 0) + 1
            # 404 is the contract's answer for a user the dataset does not know: a correct reply, not a failure.
            if status not in (200, 404):
                self.failed += 1
            elif status == 200:
                self.versions[version] = self.versions.get(version, 0) + 1
            if self.interval_s:
                self.stop_event.wait(self.interval_s)
        if conn is not None:
            conn.close()
