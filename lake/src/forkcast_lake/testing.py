"""Synthetic served traffic at the producers' encoding, for the compaction's tests and benchmark.

The records are laid out as the real producers write them (field names and order from forkcast_contract.streams;
values formatted like inference's ``Event.fields`` and the gateway's feedback script: ``ts`` with six decimals,
ids/scores as compact JSON arrays); lake/tests/unit/test_compact_encoding.py holds this against the producers'
own code, so a change there fails a test here instead of silently benchmarking another format.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass

import redis

from forkcast_contract.streams import FEEDBACK_FIELDS, PREDICTION_FIELDS


@dataclass(frozen=True)
class Served:
    """What a test produced: the request ids of the predictions and (rid, restaurant) of the feedback."""

    predictions: list[str]
    feedback: list[tuple[str, int]]


def prediction_fields(
    rid: str, ts: float, user: int, ids: list[int], scores: list[float], key: str
) -> dict[str, str]:
    values = (rid, f"{ts:.6f}", str(user), "v-test", "fv-test", json.dumps(ids, separators=(",", ":")),
              json.dumps(scores, separators=(",", ":")), key)  # fmt: skip
    return dict(zip(PREDICTION_FIELDS, values, strict=True))


def feedback_fields(rid: str, restaurant: int, clicked: bool, ts: float, key: str) -> dict[str, str]:
    values = (rid, str(restaurant), str(int(clicked)), f"{ts:.6f}", key)
    return dict(zip(FEEDBACK_FIELDS, values, strict=True))


def traffic(
    n_predictions: int, start_ts: float, *, per_prediction: int = 10, seed: int = 7, prefix: str = "r"
) -> Iterator[tuple[str, dict[str, str]]]:
    """``(kind, fields)`` for n predictions, each with ``per_prediction`` served restaurants and one feedback
    event per served restaurant (what the simulated clients send), interleaved as a platform would write them."""
    rng = random.Random(seed)
    for i in range(n_predictions):
        rid = f"{prefix}{i:09d}"
        ids = rng.sample(range(20_000), per_prediction)
        scores = [rng.random() for _ in ids]
        ts = start_ts + i * 0.001
        yield "predictions", prediction_fields(rid, ts, rng.randrange(10_000), ids, scores, "k1")
        for r in ids:
            yield "feedback", feedback_fields(rid, r, rng.random() < 0.3, ts + 1.0, "k1")


def produce(
    client: redis.Redis, streams: dict[str, str], n_predictions: int, start_ts: float, **options: object
) -> Served:
    """XADD the traffic into ``streams`` (kind → stream key), pipelined; no MAXLEN (a test must lose nothing)."""
    served = Served([], [])
    pipe = client.pipeline(transaction=False)
    for count, (kind, fields) in enumerate(traffic(n_predictions, start_ts, **options), 1):  # type: ignore[arg-type]
        pipe.xadd(streams[kind], fields)  # type: ignore[arg-type]
        if kind == "predictions":
            served.predictions.append(fields["rid"])
        else:
            served.feedback.append((fields["rid"], int(fields["restaurant"])))
        if count % 5000 == 0:
            pipe.execute()
    pipe.execute()
    return served
