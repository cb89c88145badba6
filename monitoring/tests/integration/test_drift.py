"""Drift job against a real redis-server: served features fetched through the feature-store layout and compared
with the training profile; no drift on the training data itself, clear drift on the generator's ``--drift 1.0``
entities (``draw_entities(drift=1.0)`` is what ``forkcast-data generate --drift 1.0`` draws).

Both sides come from their real producers: the reference is what ``forkcast-retrain export`` writes for a model
trained on the tiny preset (its ``probe.npz`` holds TorchScript *logits*), and the served scores are what the
inference service's ranking computes from that version's serving form (sigmoid *probabilities*, SPEC §6). Fed
logits on both sides, the test could not see that the two were in different spaces (score PSI ≈ 8 without drift).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import redis
import torch
from prometheus_client import CollectorRegistry, generate_latest

from forkcast_contract import drift
from forkcast_contract.feature_store import (
    RESTAURANT_VALUE_BYTES,
    FeatureKeys,
    pack_restaurants,
    pack_users,
)
from forkcast_contract.features import MODEL_INPUTS
from forkcast_contract.registry_format import PROBE_FILE
from forkcast_data.generate import GenerateRequest, generate
from forkcast_data.presets import preset_sizes
from forkcast_data.process import Entities, draw_entities
from forkcast_devservers.servers import RedisServer
from forkcast_inference.events import Event
from forkcast_inference.folded import FoldedModel
from forkcast_inference.model import Provenance, load_files
from forkcast_inference.ranking import Selection, rank
from forkcast_monitoring.drift_job import DriftCollector, DriftJob, Reference
from forkcast_monitoring.references import DirectoryReferences
from forkcast_monitoring.testing import NOW, fresh_redis, write_predictions
from forkcast_retrain.cli_release import export_release
from forkcast_retrain.evaluate import run_evaluate
from forkcast_retrain.prep import run_prep
from forkcast_retrain.recipes import RECIPES
from forkcast_retrain.train import TrainOptions, run_train

USERS, RESTAURANTS, VERSION = 10_000, 2_000, "20261123T101500Z-0123abcd"


@pytest.fixture(scope="module")
def reference_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A version directory as ``forkcast-retrain export`` writes it, for a model trained one epoch on the tiny
    preset (the same entities as ``draw_entities(USERS, RESTAURANTS, seed=7)``): ~10 s."""
    work = tmp_path_factory.mktemp("release")
    sizes = preset_sizes("tiny")
    assert (sizes.users, sizes.restaurants) == (USERS, RESTAURANTS)
    generate(
        GenerateRequest(out=work / "data", preset="tiny", sizes=sizes, progress=False), log=lambda _m: None
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_prep(work / "data", work / "run")
        recipe = RECIPES["default"].with_overrides(epochs=1)
        run_train(work / "run", TrainOptions(recipe=recipe, threads=1, progress=False), log=lambda _m: None)
        run_evaluate(work / "run", log=lambda _m: None)
    finally:
        torch.set_num_threads(threads)
    root = work / "refs"
    export_release(work / "run", root / VERSION)
    return root


def served_model(reference_root: Path) -> FoldedModel:
    """The version as the inference service loads it: serving form folded and checked against its probe set."""
    provenance = Provenance(VERSION, "local", "", "", "", "")
    return load_files(reference_root / VERSION, provenance).folded


def load_and_serve(client: redis.Redis, served: Entities, model: FoldedModel, events: int = 1500) -> None:
    """Features of ``served`` in the store (feature version fv1), and events carrying the scores the inference
    service's ranking serves for them (``ranking.rank``: sigmoid of the folded model's logits)."""
    keys = FeatureKeys("fc", "fv1")
    width = 30 * 4
    packed = pack_users(served.users)
    client.mset({keys.user(i): packed[i * width : (i + 1) * width] for i in range(USERS)})
    packed = pack_restaurants(served.latitude, served.longitude, served.restaurants)
    values = [
        packed[i * RESTAURANT_VALUE_BYTES : (i + 1) * RESTAURANT_VALUE_BYTES] for i in range(RESTAURANTS)
    ]
    client.mset({keys.restaurant(i): values[i] for i in range(RESTAURANTS)})
    rng = np.random.default_rng(1)
    out = []
    for k in range(events):
        user = int(rng.integers(USERS))
        ids = np.sort(rng.choice(RESTAURANTS, size=10, replace=False).astype(np.int64))
        selection = Selection(ids, np.zeros(len(ids)), len(ids), 0)
        ranked = rank(model, served.users[user], selection, [values[i] for i in ids], len(ids), False)
        event = Event(f"q{k}", NOW + k, user, VERSION, "fv1", ranked.ids.tolist(), ranked.scores.tolist())
        out.append(event)
    write_predictions(client, out)


def measure(reference_root: Path, served: Entities) -> DriftJob:
    with fresh_redis() as client:
        load_and_serve(client, served, served_model(reference_root))
        job = DriftJob(client, DirectoryReferences(reference_root), sample_events=1500)
        job.measure()
        return job


def test_no_drift_on_the_training_data(reference_root: Path) -> None:
    result = measure(reference_root, draw_entities(USERS, RESTAURANTS, seed=7)).results[VERSION]
    assert result.events == 1500
    assert set(result.feature_psi) == set(MODEL_INPUTS)
    assert max(result.feature_psi.values()) < 0.05
    # Was 8.3 when the probe's logits were profiled as they are and compared with served probabilities.
    assert result.score_psi is not None and result.score_psi < 0.05


def test_the_probe_is_profiled_in_the_served_space(reference_root: Path) -> None:
    """The reference histogram's edges are probabilities, and the probe's own scores as served read PSI 0 against
    it, while its raw logits (what the job compared before) read far off."""
    ref = Reference.load(reference_root / VERSION)
    with np.load(reference_root / VERSION / PROBE_FILE) as probe:
        logits = np.asarray(probe["scores"], dtype=np.float64)
    assert logits.min() < 0.0 and logits.max() > 1.0  # the producer writes logits
    assert ref.scores is not None
    edges = np.asarray(ref.scores["edges"])
    assert edges.min() > 0.0 and edges.max() < 1.0
    assert drift.psi_against(ref.scores, drift.served_scores(logits)) < 1e-9
    assert drift.psi_against(ref.scores, logits) > 1.0


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
    reference_root: Path, redis_server: RedisServer
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    write_predictions(client, [Event("q", NOW, 1, "20990101T000000Z-ffffffff", "fv1", [1], [0.1])])
    client.xadd("fc:events:predictions", {"model": VERSION, "ids": "not json"})
    job = DriftJob(client, DirectoryReferences(reference_root), min_events=1)
    assert job.measure() == {}
    assert job.references == {"20990101T000000Z-ffffffff": None}
