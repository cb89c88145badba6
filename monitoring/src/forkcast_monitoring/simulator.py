"""Feedback simulator (demos, drills, tests): clicks on served recommendations with the generator's true odds.

It reads the prediction events the inference service wrote (its own consumer group, so it never steals them from
the online-AUC job), and for every served restaurant draws a click with probability
``sigmoid(click_logit(user, restaurant))``: the noise-free ground truth of the data generator (SPEC §2). The
entities are redrawn from the dataset's seed and sizes, with ``--drift S`` moved as ``forkcast-data generate
--drift S`` moves them, while the service keeps scoring the features it was loaded with: online AUC then drops as
it would in production. Feedback goes to the feedback stream in the gateway's encoding, under the API key id of
the prediction it labels (the gateway accepts feedback only from the key that made the request).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import redis

from forkcast_contract.settings import EventsRedisSettings
from forkcast_contract.streams import FEEDBACK_MAXLEN, FEEDBACK_STREAM, PREDICTIONS_STREAM
from forkcast_data.process import click_logit, draw_entities, sigmoid
from forkcast_monitoring.events import parse_prediction


@dataclass
class Record:
    """One simulated impression: what an offline evaluation of the same traffic needs."""

    model_version: str
    score: float
    clicked: bool


class Simulator:
    def __init__(
        self, client: redis.Redis, data: Path, *, drift: float = 0.0, seed: int = 0, delay_s: float = 1.0
    ) -> None:
        meta = json.loads((data / "dataset.json").read_text())
        sizes = meta["sizes"]
        self.entities = draw_entities(sizes["users"], sizes["restaurants"], seed=meta["seed"], drift=drift)
        self.client, self.delay_s = client, delay_s
        self.rng = np.random.default_rng(seed)
        self.group = "feedback-sim"
        try:
            client.xgroup_create(PREDICTIONS_STREAM, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def step(self, block_ms: int | None = 200, count: int = 500) -> list[Record]:
        """Click on one batch of served recommendations; returns the impressions it produced."""
        reply = self.client.xreadgroup(
            self.group, "sim", {PREDICTIONS_STREAM: ">"}, count=count, block=block_ms
        )
        records: list[Record] = []
        pipe = self.client.pipeline(transaction=False)
        ids_done = []
        for _, entries in cast(list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]], reply or []):
            for entry_id, fields in entries:
                ids_done.append(entry_id)
                user = int(fields.get(b"user", b"-1"))
                prediction = parse_prediction(fields)
                if prediction is None or not 0 <= user < len(self.entities.users):
                    continue
                rest = np.fromiter(prediction.scores, dtype=np.int64)
                p = sigmoid(
                    click_logit(
                        self.entities.users, self.entities.restaurants, np.full_like(rest, user), rest
                    )
                )
                clicks = self.rng.random(len(rest)) < p
                for r, clicked in zip(rest.tolist(), clicks.tolist(), strict=True):
                    records.append(Record(prediction.model_version, prediction.scores[r], clicked))
                    pipe.xadd(
                        FEEDBACK_STREAM,
                        {
                            "rid": prediction.request_id,
                            "restaurant": str(r),
                            "clicked": str(int(clicked)),
                            "ts": f"{prediction.time + self.delay_s:.6f}",
                            "key_id": prediction.key_id,
                        },
                        maxlen=FEEDBACK_MAXLEN,
                        approximate=True,
                    )
        if ids_done:
            pipe.xack(PREDICTIONS_STREAM, self.group, *ids_done)
            pipe.execute()
        return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="forkcast-feedback-sim", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--redis-url",
        default=EventsRedisSettings().events_url,
        help="the events Redis with both streams (FORKCAST_EVENTS_REDIS_URL, else REDIS_URL)",
    )
    parser.add_argument("--data", type=Path, required=True, help="the dataset the service was loaded from")
    parser.add_argument(
        "--drift", type=float, default=0.0, help="move the true user/restaurant features (0: none)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the click draws")
    args = parser.parse_args(argv)
    sim = Simulator(redis.Redis.from_url(args.redis_url), args.data, drift=args.drift, seed=args.seed)
    total = 0
    while True:
        total += len(sim.step(block_ms=1000))
        print(f"\rimpressions: {total}", end="", flush=True)
