"""Helpers shared by the test modules: producers' encodings, draining the job, an independent AUC."""

from __future__ import annotations

import numpy as np
import redis

from forkcast_contract.streams import PREDICTIONS_STREAM
from forkcast_inference.events import Event
from forkcast_monitoring.online_auc import OnlineAuc

NOW = 1_800_000_000.0


def write_predictions(client: redis.Redis, events: list[Event]) -> None:
    pipe = client.pipeline(transaction=False)
    for e in events:
        pipe.xadd(PREDICTIONS_STREAM, e.fields())  # type: ignore[arg-type]
    pipe.execute()


def drain(job: OnlineAuc) -> None:
    while job.step(block_ms=50):
        pass
    job.compute(job.clock())


def brute_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    pos, neg = scores[labels], scores[~labels]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)
