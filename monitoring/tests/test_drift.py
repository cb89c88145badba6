"""Drift job against a real redis-server: served features fetched through the feature-store layout and compared
with the training profile; no drift on the training data itself, clear drift on the generator's ``--drift 1.0``
entities (``draw_entities(drift=1.0)`` is what ``forkcast-data generate --drift 1.0`` draws)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import redis
from monitoring_support import NOW, write_predictions
from prometheus_client import CollectorRegistry, generate_latest

from forkcast_contract import drift
from forkcast_contract.feature_store import FeatureKeys, pack_restaurants, pack_users
from forkcast_contract.features import MODEL_INPUTS
from forkcast_contract.registry_format import DATA_PROFILE_FILE, PROBE_FILE
from forkcast_data.process import Entities, click_logit, draw_entities
from forkcast_features.localredis import LocalRedis
from forkcast_inference.events import Event
from forkcast_monitoring.drift_job import DriftCollector, DriftJob
from forkcast_monitoring.references import DirectoryReferences

USERS, RESTAURANTS, VERSION = 10_000, 2_000, "20261123T101500Z-0123abcd"


@pytest.fixture(scope="module")
def reference_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A version directory as ``forkcast-retrain export`` writes it: the profile and the probe scores."""
    train = draw_entities(USERS, RESTAURANTS, seed=7)
    columns = {
        name: (train.users[:, i] if i < 30 else train.restaurants[:, i - 30])
        for i, name in enumerate(MODEL_INPUTS)
    }
    root = tmp_path_factory.mktemp("refs")
    (root / VERSION).mkdir()
    (root / VERSION / DATA_PROFILE_FILE).write_text(json.dumps(drift.make_profile(columns, 0.1)))
    rng = np.random.default_rng(0)
    users, rests = rng.integers(USERS, size=2000), rng.integers(RESTAURANTS, size=2000)
    np.savez(root / VERSION / PROBE_FILE, scores=click_logit(train.users, train.restaurants, users, rests))
    return root


def load_and_serve(client: redis.Redis, served: Entities, events: int = 1500) -> None:
    """Features of ``served`` in the store (feature version fv1), and events scoring them as the service would."""
    keys = FeatureKeys("fc", "fv1")
    width = 30 * 4
    packed = pack_users(served.users)
    client.mset({keys.user(i): packed[i * width : (i + 1) * width] for i in range(USERS)})
    packed = pack_restaurants(served.latitude, served.longitude, served.restaurants)
    width = len(packed) // RESTAURANTS
    client.mset({keys.restaurant(i): packed[i * width : (i + 1) * width] for i in range(RESTAURANTS)})
    rng = np.random.default_rng(1)
    out = []
    for k in range(events):
        user = int(rng.integers(USERS))
        ids = rng.choice(RESTAURANTS, size=10, replace=False).astype(np.int64)
        scores = click_logit(served.users, served.restaurants, np.full_like(ids, user), ids)
        out.append(Event(f"q{k}", NOW + k, user, VERSION, "fv1", ids.tolist(), scores.tolist()))
    write_predictions(client, out)


def measure(reference_root: Path, served: Entities) -> DriftJob:
    with LocalRedis() as server:
        client = server.client()
        load_and_serve(client, served)
        job = DriftJob(client, DirectoryReferences(reference_root), sample_events=1500)
        job.measure()
        return job


def test_no_drift_on_the_training_data(reference_root: Path) -> None:
    result = measure(reference_root, draw_entities(USERS, RESTAURANTS, seed=7)).results[VERSION]
    assert result.events == 1500
    assert set(result.feature_psi) == set(MODEL_INPUTS)
    assert max(result.feature_psi.values()) < 0.05
    assert result.score_psi is not None and result.score_psi < 0.05


def test_clear_drift_on_drifted_data(reference_root: Path) -> None:
    job = measure(reference_root, draw_entities(USERS, RESTAURANTS, seed=7, drift=1.0))
    result = job.results[VERSION]
    assert max(result.feature_psi.values()) > drift.PSI_SIGNIFICANT
    assert result.score_psi is not None and result.score_psi > 0.1
    registry = CollectorRegistry()
    registry.register(DriftCollector(job))
    text = generate_latest(registry).decode()
    assert f'forkcast_drift_feature_psi{{feature="user.f00",model_version="{VERSION}"}}' in text
    assert f'forkcast_drift_sample_events{{model_version="{VERSION}"}} 1500.0' in text


def test_version_without_reference_and_malformed_events_are_skipped(
    reference_root: Path, redis_server: LocalRedis
) -> None:
    client = redis_server.client()
    write_predictions(client, [Event("q", NOW, 1, "20990101T000000Z-ffffffff", "fv1", [1], [0.1])])
    client.xadd("fc:events:predictions", {"model": VERSION, "ids": "not json"})
    job = DriftJob(client, DirectoryReferences(reference_root), min_events=1)
    assert job.measure() == {}
    assert job.references == {"20990101T000000Z-ffffffff": None}
