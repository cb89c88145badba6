"""What the registry adds for tests on top of a running S3: a boto3 client of it, and publishing files as they are.

The servers themselves (``weed mini``, ``mlflow server``) are started by ``forkcast_devservers.servers.Seaweed`` and
``Mlflow`` (or the ``seaweed``/``mlflow`` fixtures of its pytest plugin); only what needs this package or boto3
lives here, so that forkcast_devservers stays standard library only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from forkcast_contract.model_format import METRICS_FILE, REQUIRED_METRICS
from forkcast_contract.registry_format import FileDigest
from forkcast_devservers.servers import Seaweed
from forkcast_devservers.servers.seaweed import REGION
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
