"""Startup from the S3 registry (a real SeaweedFS: the session's ``seaweed`` fixture of forkcast_devservers):
download + verify, pins honoured, tampering refused."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from forkcast_contract.registry_format import SERVING_WEIGHTS_FILE
from forkcast_devservers.servers import RedisServer, Seaweed
from forkcast_inference.app import create_app
from forkcast_inference.testing import ANSWER_TIMEOUT_S, call, make_settings
from forkcast_registry.registry import ModelRegistry
from forkcast_registry.settings import RegistrySettings
from forkcast_registry.testing import publish_files


@pytest.fixture
def published(
    seaweed: Seaweed, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, str, ModelRegistry]:
    """The tiny model published as a version; returns (URI, manifest sha256, registry)."""
    for name, value in seaweed.client_env("inference-test").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FORKCAST_MODEL_CACHE", str(tmp_path / "cache"))
    registry = ModelRegistry.from_settings(RegistrySettings())
    registry.store.ensure_bucket(create=True)
    version, digest = publish_files(registry, {p.name: p for p in model_dir.iterdir()}, str(time.time_ns()))
    return registry.uri(version), digest.sha256, registry


def test_starts_from_the_registry_and_serves(
    published: tuple[str, str, ModelRegistry], redis_server: RedisServer
) -> None:
    uri, manifest_sha, _ = published
    t0 = time.monotonic()
    app = create_app(
        make_settings(
            redis_server.url,
            None,
            FORKCAST_MODEL_URI=uri,
            FORKCAST_MODEL_MANIFEST_SHA256=manifest_sha,
            redis_timeout_s=ANSWER_TIMEOUT_S,  # this test compares answers, not the Redis deadline
        )
    )
    app.startup()
    assert call(app, "GET", "/readyz").status == 200
    # A smoke bound on download + verify + startup, not a performance test: 10 s left little margin for the
    # SeaweedFS round trips on a starved CI machine; a hung download still fails it.
    assert time.monotonic() - t0 < 60
    info = json.loads(call(app, "GET", "/version").body)
    assert info["model_uri"] == uri and len(info["model_sha256"]) == 64
    body = {"candidate_restaurant_ids": [1, 2, 3], "latitude": 13.7, "longitude": 100.5}
    r = call(app, "POST", "/recommend/u1", json.dumps(body).encode())
    assert r.status == 200 and r.headers["x-model-version"] == uri.rstrip("/").rsplit("/", 1)[1]


def test_wrong_pin_is_not_ready(published: tuple[str, str, ModelRegistry], redis_server: RedisServer) -> None:
    uri, _, _ = published
    for pins in ({"FORKCAST_MODEL_MANIFEST_SHA256": "0" * 64}, {"FORKCAST_MODEL_SHA256": "1" * 64}):
        app = create_app(make_settings(redis_server.url, None, FORKCAST_MODEL_URI=uri, **pins))
        app.startup()
        r = call(app, "GET", "/readyz")
        assert r.status == 503 and "sha256" in json.loads(r.body)["reason"]


def test_tampered_object_is_refused(
    published: tuple[str, str, ModelRegistry], redis_server: RedisServer
) -> None:
    uri, _, registry = published
    version = uri.rstrip("/").rsplit("/", 1)[1]
    key = registry.key(version, SERVING_WEIGHTS_FILE)
    registry.store.delete(key)
    registry.store.put_new(key, b"not the weights")
    app = create_app(make_settings(redis_server.url, None, FORKCAST_MODEL_URI=uri))
    app.startup()
    r = call(app, "GET", "/readyz")
    assert r.status == 503 and SERVING_WEIGHTS_FILE in json.loads(r.body)["reason"]
