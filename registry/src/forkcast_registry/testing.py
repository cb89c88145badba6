"""What the registry adds for tests on top of a running S3: a boto3 client of it, and publishing files as they are.

The servers themselves (``weed mini``, ``mlflow server``) are started by ``forkcast_devservers.servers.Seaweed`` and
``Mlflow`` (or the ``seaweed``/``mlflow`` fixtures of its pytest plugin); only what needs this package or boto3
lives here, so that forkcast_devservers stays standard library only.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from forkcast_contract.model_format import METRICS_FILE, REQUIRED_METRICS
from forkcast_contract.registry_format import FileDigest
from forkcast_devservers.binaries import WEED, MissingBinaryError, locate
from forkcast_devservers.servers import Mlflow, Seaweed
from forkcast_devservers.servers.mlflow import SERVER_ENV
from forkcast_devservers.servers.seaweed import PORT_FLAGS, REGION
from forkcast_registry.publish import build_manifest, new_version_id, publish_version
from forkcast_registry.registry import ModelRegistry


def s3_client(server: Seaweed) -> Any:
    """A plain boto3 S3 client of ``server`` (for tests that set up buckets and objects by hand)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name=REGION,
    )


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


# -- Transitional: names localplatform/ still imports (components.py, drill_services.py, fault_drills.py,
# tests/test_faults.py) while it moves onto forkcast_devservers. Each is a thin view of devservers, not a copy of
# its code; they go as soon as `grep -rn forkcast_registry.testing localplatform` finds none of them.
SEAWEED_PORT_FLAGS = PORT_FLAGS
MLFLOW_SERVER_ENV = SERVER_ENV


def weed_binary() -> str | None:
    """The ``weed`` devservers runs, or None when it is not installed."""
    try:
        return locate(WEED)
    except MissingBinaryError:
        return None


def seaweed_command(binary: str, data_dir: Path, ports: dict[str, int]) -> list[str]:
    """``Seaweed.argv`` with ``binary`` and ``data_dir`` as its ``-dir``."""
    argv = Seaweed(data_dir, ports=ports).argv()
    return [binary, *(f"-dir={data_dir}" if arg.startswith("-dir=") else arg for arg in argv[1:])]


def mlflow_server_argv(port: int, store_dir: Path, artifacts: str, binary: str | None = None) -> list[str]:
    """``Mlflow.argv`` for a server on ``port`` with sqlite in ``store_dir`` and artifacts at ``artifacts`` (an
    ``s3://bucket/`` URI or a folder)."""
    if artifacts.startswith("s3://"):
        server = Mlflow(
            store_dir, s3_endpoint="", bucket=artifacts.removeprefix("s3://").strip("/"), port=port
        )
    else:
        server = Mlflow(store_dir, s3_endpoint=None, bucket=artifacts, port=port)
    argv = server.argv()
    return [binary or argv[0], *argv[1:]]


class SeaweedServer(Seaweed):
    """A started ``Seaweed`` under the old names (``endpoint_url``, ``log_path``, ``env(bucket)``, ``client()``)."""

    @property
    def endpoint_url(self) -> str:
        return self.endpoint

    @property
    def log_path(self) -> Path:
        return self.log

    def env(self, bucket: str | None = None) -> dict[str, str]:
        """The client environment for ``bucket``; without one, the server's own environment (``Seaweed.env``)."""
        return super().env() if bucket is None else self.client_env(bucket)

    def client(self) -> Any:
        return s3_client(self)


# The random secret each data directory's server got: a server started again on the same directory (an outage, not a
# move) keeps the credentials its clients already hold.
_secrets: dict[Path, str] = {}


def start_seaweed(
    data_dir: Path,
    access_key: str = "forkcast",
    secret_key: str | None = None,
    ports: dict[str, int] | None = None,
) -> SeaweedServer:
    """``SeaweedServer(...).start()``; ``ports`` (a stopped server's ``.ports``) brings it back on the same ports,
    and the same ``data_dir`` with the same secret."""
    if secret_key is None:
        secret_key = _secrets.setdefault(data_dir.resolve(), secrets.token_urlsafe(24))
    server = SeaweedServer(data_dir, access_key=access_key, secret_key=secret_key, ports=ports)
    return server.start()
