"""Model-level: online AUC through streams, join and window equals the offline AUC of the same traffic, and drops
when the simulator drifts the true features (the served scores stay those of the undrifted features).

The predictions are written in the inference service's event encoding by a stand-in scorer: the sigmoid of the true
logit of the features the service holds plus noise (an imperfect model, served as probabilities like the service's
scores), so that this test does not need a trained model. They come from eight API keys (the gateway's key ids),
so the default per-key share cap (0.25) is in force and binds no one; the simulator labels each under its own key.
Online and offline see the same pairs, so they agree to rounding (1e-9): a partial mis-join would show.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from forkcast_data.process import click_logit, draw_entities
from forkcast_data.testing import tiny_data as tiny_data  # the shared session fixture: the tiny dataset
from forkcast_inference.events import Event
from forkcast_monitoring.online_auc import OnlineAuc
from forkcast_monitoring.settings import MonitoringSettings
from forkcast_monitoring.simulator import Simulator
from forkcast_monitoring.testing import NOW, brute_auc, drain, fresh_redis, write_predictions

REQUESTS, CANDIDATES = 800, 10  # 8,000 joined pairs


def serve(client: object, seed: int) -> None:
    served = draw_entities(10_000, 2_000, seed=7)  # the features the service was loaded with (drift 0)
    rng = np.random.default_rng(seed)
    events = []
    for i in range(REQUESTS):
        user = int(rng.integers(10_000))
        ids = rng.choice(2_000, size=CANDIDATES, replace=False).astype(np.int64)
        logit = click_logit(served.users, served.restaurants, np.full_like(ids, user), ids)
        scores = 1.0 / (1.0 + np.exp(-(logit + rng.normal(0.0, 0.5, size=CANDIDATES))))
        events.append(Event(f"q{i}", NOW - 60 + i * 0.01, user, "v1", "fv1", ids.tolist(), scores.tolist()))
    write_predictions(client, events, [f"app-{i % 8}" for i in range(REQUESTS)])  # type: ignore[arg-type]


def online_and_offline(
    tiny_data: Path, settings: MonitoringSettings, drift: float
) -> tuple[float, float, int]:
    with fresh_redis() as client:
        job = OnlineAuc(client, settings.model_copy(update={"auc_max_key_share": 0.25}), clock=lambda: NOW)
        job.ensure_groups()
        sim = Simulator(client, tiny_data, drift=drift, seed=1)
        serve(client, seed=2)
        records = []
        while batch := sim.step(block_ms=50):
            records += batch
        drain(job)
        estimate = job.estimates["v1"]
        assert estimate.excluded == 0 and job.joiner.counts[("feedback", "key_mismatch")] == 0
        scores = np.array([r.score for r in records])
        labels = np.array([r.clicked for r in records])
        assert estimate.auc is not None
        return estimate.auc, brute_auc(scores, labels), estimate.samples


def test_online_auc_matches_offline_and_drops_with_drift(
    tiny_data: Path, settings: MonitoringSettings
) -> None:
    online, offline, samples = online_and_offline(tiny_data, settings, drift=0.0)
    assert samples == REQUESTS * CANDIDATES >= 5_000
    assert abs(online - offline) <= 1e-9  # the same pairs: exact (it allowed 0.01 before issue 18.10)
    assert online > 0.7
    drifted, drifted_offline, _ = online_and_offline(tiny_data, settings, drift=1.0)
    assert abs(drifted - drifted_offline) <= 1e-9
    assert online - drifted >= 0.05
