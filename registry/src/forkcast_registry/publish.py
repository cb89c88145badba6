"""Publishing a version: every file with a conditional put, then ``manifest.json`` last.

``If-None-Match: *`` makes S3 refuse to overwrite, so two publishers can never mix files into one version and a
published version never changes. An upload that dies before the manifest leaves a version that readers do not
see; publishing the same files again resumes it (a file already there with the same bytes is accepted) and
``gc`` removes it otherwise.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

from forkcast_contract.registry_format import (
    MANIFEST_FILE,
    DatasetSnapshot,
    FileDigest,
    VersionManifest,
    is_version,
)
from forkcast_registry.digest import bytes_digest, file_digest
from forkcast_registry.errors import InvalidArtifactError, VersionExistsError
from forkcast_registry.registry import ModelRegistry


def new_version_id(
    data_fingerprint: str, code_revision: str, model_sha256: str, now: datetime | None = None
) -> str:
    """UTC time (sortable) + 8 hex of what the version was made from (unique for different models)."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    tag = hashlib.sha256(f"{data_fingerprint}\n{code_revision}\n{model_sha256}".encode()).hexdigest()[:8]
    return f"{stamp}-{tag}"


def build_manifest(
    registry: ModelRegistry,
    version: str,
    files: dict[str, Path],
    *,
    data_fingerprint: str,
    code_revision: str,
    feature_schema_hash: str,
    metrics: dict[str, float],
    gate_passed: bool | None,
    dataset: DatasetSnapshot | None = None,
) -> VersionManifest:
    if not is_version(version):
        raise InvalidArtifactError(f"{version!r} is not a version id")
    if MANIFEST_FILE in files:
        raise InvalidArtifactError(f"{MANIFEST_FILE} is written by publish itself")
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise InvalidArtifactError(f"cannot publish, missing files: {', '.join(missing)}")
    return VersionManifest(
        model_name=registry.model_name,
        version=version,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        files={name: file_digest(path) for name, path in files.items()},
        data_fingerprint=data_fingerprint,
        code_revision=code_revision,
        feature_schema_hash=feature_schema_hash,
        metrics=metrics,
        gate_passed=gate_passed,
        dataset=dataset,
    )


def upload_files(registry: ModelRegistry, manifest: VersionManifest, files: dict[str, Path]) -> None:
    """The data files of a version (not the manifest), each created only if absent.

    A file that already exists is accepted only with the same bytes (resuming an interrupted upload).
    """
    version = manifest.version
    if registry.store.exists(registry.key(version, MANIFEST_FILE)):
        raise VersionExistsError(f"version {version} is already published at {registry.uri(version)}")
    for name, path in files.items():
        data = path.read_bytes()
        if bytes_digest(data) != manifest.files[name]:
            raise InvalidArtifactError(f"{path} changed while publishing")
        key = registry.key(version, name)
        if registry.store.put_new(key, data):
            continue
        existing = registry.store.get(key)
        if existing is None or bytes_digest(existing) != manifest.files[name]:
            raise VersionExistsError(f"version {version}: {name} already exists in S3 with other bytes")


def publish_version(registry: ModelRegistry, manifest: VersionManifest, files: dict[str, Path]) -> FileDigest:
    """Upload ``files`` and then the manifest; returns the manifest's own digest (what a release pins)."""
    upload_files(registry, manifest, files)
    body = (json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True) + "\n").encode()
    if not registry.store.put_new(registry.key(manifest.version, MANIFEST_FILE), body):
        raise VersionExistsError(f"version {manifest.version} was published concurrently by someone else")
    return bytes_digest(body)
