"""The drift job's training references from the model registry, against the real SeaweedFS the registry tests use
(the session's ``seaweed`` fixture, forkcast_devservers' pytest plugin):
a served version is downloaded on first sight and verified against its manifest; a version whose files fail to
verify, or that does not exist, is skipped for good; an unreachable S3 is asked again at the next measurement."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import redis

from forkcast_contract.model_format import METRICS_FILE
from forkcast_contract.registry_format import DATA_PROFILE_FILE, MANIFEST_FILE, PROBE_FILE
from forkcast_devservers.ports import free_port
from forkcast_devservers.servers import Seaweed
from forkcast_monitoring.drift_job import DriftJob
from forkcast_monitoring.references import ReferenceUnavailableError, RegistryReferences
from forkcast_registry.registry import ModelRegistry
from forkcast_registry.settings import RegistrySettings
from forkcast_registry.testing import publish_files

PROFILE = {"bins": 1, "label_rate": 0.5, "features": {"user.f00": {"edges": [0.0, 1.0], "shares": [1.0]}}}


def registry_for(env: dict[str, str], cache: Path, monkeypatch: pytest.MonkeyPatch) -> ModelRegistry:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FORKCAST_MODEL_CACHE", str(cache))
    monkeypatch.setenv("FORKCAST_S3_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("FORKCAST_S3_CONNECT_TIMEOUT_S", "0.5")
    return ModelRegistry.from_settings(RegistrySettings())


@pytest.fixture
def registry(
    seaweed: Seaweed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> ModelRegistry:
    bucket = "drift-" + request.node.name.replace("_", "-")[:40].lower()
    reg = registry_for(seaweed.client_env(bucket), tmp_path / "cache", monkeypatch)
    reg.store.ensure_bucket(create=True)
    return reg


def publish_reference(registry: ModelRegistry, tmp_path: Path, seed: int) -> str:
    """A version holding a training profile and probe scores (what the drift job reads), plus a model file."""
    out = tmp_path / f"version-{seed}"
    out.mkdir()
    (out / DATA_PROFILE_FILE).write_text(json.dumps(PROFILE))
    np.savez(out / PROBE_FILE, scores=np.linspace(-2.0, 2.0, 50))
    (out / "model.pt").write_bytes(bytes(range(256)) * (seed + 1))
    (out / METRICS_FILE).write_text(
        json.dumps(
            {"data_fingerprint": f"data{seed}", "code_revision": "rev", "feature_schema_hash": "h"}
            | {"roc_auc": 0.7, "accuracy": 0.7, "logloss": 0.6}
        )
    )
    version, _ = publish_files(registry, {p.name: p for p in out.iterdir()}, f"model{seed}", gate_passed=True)
    return version


def job(registry: ModelRegistry) -> DriftJob:
    # The client is never used by reference(): a Redis that does not exist keeps the test about S3.
    return DriftJob(redis.Redis(port=free_port()), RegistryReferences(registry))


def test_served_version_is_downloaded_verified_and_loaded(registry: ModelRegistry, tmp_path: Path) -> None:
    version = publish_reference(registry, tmp_path, 1)
    drift = job(registry)
    reference = drift.reference(version)
    assert reference is not None
    assert reference.profile == PROFILE
    assert reference.scores is not None and sum(reference.scores["shares"]) == pytest.approx(1.0)
    cached = registry.cache_dir / registry.model_name / version
    assert (cached / MANIFEST_FILE).is_file() and (cached / DATA_PROFILE_FILE).is_file()


def test_version_whose_profile_fails_verification_is_skipped(
    registry: ModelRegistry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The twin: the profile in S3 overwritten behind the registry's back is refused, by file name."""
    version = publish_reference(registry, tmp_path, 2)
    registry.store.client.put_object(
        Bucket=registry.store.bucket, Key=registry.key(version, DATA_PROFILE_FILE), Body=b'{"forged": 1}'
    )
    drift = job(registry)
    with caplog.at_level(logging.WARNING):
        assert drift.reference(version) is None
    assert drift.references == {version: None}
    assert f"{DATA_PROFILE_FILE} failed verification" in caplog.text
    assert not (registry.cache_dir / registry.model_name / version).exists()


def test_unknown_version_is_skipped(registry: ModelRegistry) -> None:
    drift = job(registry)
    assert drift.reference("20990101T000000Z-ffffffff") is None
    assert drift.reference("../../etc") is None
    assert drift.references == {"20990101T000000Z-ffffffff": None, "../../etc": None}


def test_unreachable_s3_is_retried_at_the_next_measurement(
    seaweed: Seaweed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = seaweed.client_env("drift-unreachable") | {"S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}
    registry = registry_for(env, tmp_path / "cache", monkeypatch)
    version = "20261123T101500Z-0123abcd"
    with pytest.raises(ReferenceUnavailableError, match="unreachable"):
        RegistryReferences(registry).directory(version)
    drift = job(registry)
    assert drift.reference(version) is None
    assert version not in drift.references, "a transient failure must not skip the version for good"
