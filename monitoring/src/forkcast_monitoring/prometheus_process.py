"""Local processes on free 127.0.0.1 ports, stopped by their PID; above all a Prometheus that is waited on until ready.

Used by the dashboards' PNG previews (``render_png``) and by the alert-path test (Prometheus, Alertmanager and the
alert receiver). Standard library only.
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PROMETHEUS_BIN = "prometheus"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``args`` with stdout and stderr going to ``log``."""
    with log.open("wb") as sink:
        return subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate one process we started, by its PID; kill it if it does not exit."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextmanager
def prometheus(config: Path, data_dir: Path, log: Path, *flags: str, timeout_s: float = 60) -> Iterator[str]:
    """A Prometheus with ``config`` and ``data_dir`` on a free loopback port, ready; yields its URL, stops it by PID."""
    port = free_port()
    proc = start(
        [
            PROMETHEUS_BIN,
            f"--config.file={config}",
            f"--storage.tsdb.path={data_dir}",
            *flags,
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while not http_ok(f"{url}/-/ready"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prometheus did not start: {log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        stop(proc)
