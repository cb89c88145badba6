"""What the fault drills (localplatform/tests/test_faults.py) add to the rollout drill's processes.

The processes themselves are drill_stack's (a ``Stack`` of PIDs on free loopback ports); this module adds the two
things a fault needs around them: killing one of them outright (SIGKILL, then reaping it) and starting it again
on the same port (Redis from its own RDB file; an inference replica from the S3 registry, with or without a
model cache), and a load client that records every answer (start time, latency, status, versions, a digest of
the body) so that a drill can measure what clients saw while the fault lasted.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from forkcast_contract.api import HEADER_FEATURE_VERSION, HEADER_MODEL_VERSION
from forkcast_local import drill_stack as ds
from forkcast_local.loadgen import request_bodies
from forkcast_registry.testing import MLFLOW_SERVER_ENV, mlflow_server_argv


def kill(stack: ds.Stack, pid: int) -> None:
    """SIGKILL a process ``stack`` started (no shutdown of any kind), reap it and forget it."""
    for proc in [p for p in stack.procs if p.pid == pid]:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        stack.procs.remove(proc)


def freeze(pid: int, frozen: bool) -> None:
    """SIGSTOP (or SIGCONT) the process group of ``pid`` (``Stack.start`` gives each process its own): a server
    that still accepts connections (the kernel's backlog) but never answers."""
    os.killpg(pid, signal.SIGSTOP if frozen else signal.SIGCONT)


def start_mlflow(stack: ds.Stack, port: int, root: Path) -> int:
    """``mlflow server`` on ``port`` (sqlite store and artifacts under ``root``), started in the background.

    It takes 20-35 s to answer on a shared 2-core machine, so the caller starts it early and waits with
    ``wait_http`` when it needs it.
    """
    argv = mlflow_server_argv(port, root, str(root / "mlflow-artifacts"))
    env = {**os.environ, **MLFLOW_SERVER_ENV}
    with (stack.work / "mlflow.log").open("ab") as log:
        proc = subprocess.Popen(
            argv, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    stack.procs.append(proc)
    return proc.pid


def wait_http(url: str, timeout_s: float) -> float:
    """Seconds until ``url`` answered 200; raises after ``timeout_s``."""
    t0 = time.monotonic()
    while not ds.http_ok(url):
        if time.monotonic() - t0 > timeout_s:
            raise RuntimeError(f"{url} did not answer within {timeout_s:.0f} s")
        time.sleep(0.2)
    return time.monotonic() - t0


def restart_redis(stack: ds.Stack, port: int) -> int:
    """redis-server again on ``port`` with the stack's directory: it loads the ``dump.rdb`` a SAVE left there."""
    return stack.start("redis", ds.redis_argv(port, stack.work), {}, f"redis:{port}")


def start_replica(
    stack: ds.Stack,
    name: str,
    redis_url: str,
    registry_env: dict[str, str],
    port: int | None = None,
    ready_path: str = "/readyz",
) -> tuple[int, str]:
    """``forkcast-inference`` serving FORKCAST_MODEL_URI from S3 (``registry_env``: S3 settings, cache, URI).

    ``ready_path="/healthz"`` returns as soon as the process answers at all, for a replica expected to stay unready.
    """
    port = port or ds.free_port()
    env = {
        **registry_env,
        "REDIS_URL": redis_url,
        "FORKCAST_FEATURE_PREFIX": ds.PREFIX,
        "FORKCAST_HOST": "127.0.0.1",
        "FORKCAST_PORT": str(port),
        "FORKCAST_LOG_LEVEL": "WARNING",
    }
    base = f"http://127.0.0.1:{port}"
    return stack.start(name, [str(ds.BIN / "forkcast-inference")], env, f"{base}{ready_path}"), base


@dataclass(frozen=True)
class Answer:
    """One request as the client saw it; status 0 = no answer within the client's timeout (or a broken socket)."""

    index: int  # row of requests.parquet
    started: float  # time.monotonic() when sent
    latency_s: float
    status: int
    model_version: str
    feature_version: str
    digest: str  # sha256 of the body: equal bodies, equal scores
    detail: str = ""  # the start of an error answer's body, for the report


def fetch(
    base: str, api_key: str, user: str, body: bytes, timeout_s: float
) -> tuple[int, dict[str, str], bytes]:
    """One POST /recommend on a fresh connection: (status, headers, body); status 0 when nothing came back."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout_s)
    try:
        headers = {"content-type": "application/json", "x-api-key": api_key}
        conn.request("POST", f"/recommend/{user}", body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    except (OSError, http.client.HTTPException):
        return 0, {}, b""
    finally:
        conn.close()


@dataclass
class LoadClient:
    """``workers`` keep-alive connections sending the rows of requests.parquet back to back until ``stop``.

    Every answer is recorded; ``timeout_s`` bounds each request, so a hung request shows up as status 0.
    """

    data: Path
    api_key: str
    base: str
    workers: int = 2
    timeout_s: float = 2.0
    rows: int = 200
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.bodies = request_bodies(self.data / "requests.parquet", self.rows)

    def start(self) -> LoadClient:
        for w in range(self.workers):
            thread = threading.Thread(target=self._run, args=(w,), daemon=True, name=f"load-{w}")
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> list[Answer]:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout_s + 5)
        return sorted(self.answers, key=lambda a: a.started)

    def _run(self, worker: int) -> None:
        host, port = self.base.removeprefix("http://").split(":")
        headers = {"content-type": "application/json", "x-api-key": self.api_key}
        conn = http.client.HTTPConnection(host, int(port), timeout=self.timeout_s)
        i = worker
        while not self._stop.is_set():
            index = i % len(self.bodies)
            user, body = self.bodies[index]
            i += self.workers
            t0 = time.monotonic()
            try:
                conn.request("POST", f"/recommend/{user}", body=body, headers=headers)
                resp = conn.getresponse()
                payload = resp.read()
                status = resp.status
                model = resp.getheader(HEADER_MODEL_VERSION, "")
                features = resp.getheader(HEADER_FEATURE_VERSION, "")
            except (OSError, http.client.HTTPException):
                conn.close()
                status, model, features, payload = 0, "", "", b""
            answer = Answer(
                index,
                t0,
                time.monotonic() - t0,
                status,
                model,
                features,
                hashlib.sha256(payload).hexdigest(),
                "" if status == 200 else payload[:160].decode("utf-8", "replace"),
            )
            with self._lock:
                self.answers.append(answer)
            if status not in (200, 404):
                self._stop.wait(0.01)  # an error answer is instant: do not spin on a dead backend
        conn.close()


def quantile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def registry_env(s3_env: dict[str, str], cache: Path, uri: str) -> dict[str, str]:
    """The environment of a replica serving ``uri`` from the registry described by ``s3_env``."""
    return {**s3_env, "FORKCAST_MODEL_CACHE": str(cache), "FORKCAST_MODEL_URI": uri}
