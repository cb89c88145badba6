"""The locust workload of ``make load``: rows of ``requests.parquet`` POSTed to the gateway's /recommend/{user_id}.

Run by ``forkcast_local.load`` (which sets the environment below), not by hand:

* ``FORKCAST_LOAD_REQUESTS``: the requests file; ``FORKCAST_LOAD_ROWS``: how many of its rows to cycle through.
* ``FORKCAST_LOAD_API_KEY``: sent as ``X-API-Key``.
* ``FORKCAST_LOAD_STAGES``: ``users:seconds,…`` run one after the other (the shape below), then stop.
* ``FORKCAST_LOAD_USER_RATE``: requests/s per user as Poisson arrivals (``poisson_pacing``), 0 for back-to-back
  requests.
* ``FORKCAST_LOAD_LOG``: every request's (start, latency ms, status, users at the time) is written there at exit,
  so the runner computes exact percentiles per stage instead of locust's rounded, windowed ones.
"""

from __future__ import annotations

import csv
import itertools
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from locust import FastHttpUser, LoadTestShape, User, constant, events, task
from locust.env import Environment

from forkcast_local.loadgen import request_bodies

STAGES: list[tuple[int, float]] = [
    (int(users), float(seconds))
    for users, seconds in (
        stage.split(":") for stage in os.environ.get("FORKCAST_LOAD_STAGES", "1:10").split(",") if stage
    )
]
USER_RATE = float(os.environ.get("FORKCAST_LOAD_USER_RATE", "0"))
_BODIES = (
    request_bodies(
        Path(os.environ["FORKCAST_LOAD_REQUESTS"]), int(os.environ.get("FORKCAST_LOAD_ROWS", "2000"))
    )
    if "FORKCAST_LOAD_REQUESTS" in os.environ
    else []
)
_NEXT = itertools.cycle(_BODIES)
_RECORDS: list[tuple[float, float, int, int]] = []
_ENV: list[Environment] = []


class StagesShape(LoadTestShape):
    """``STAGES`` in order, each user count reached at once (spawn rate = users), then the end of the test."""

    def tick(self) -> tuple[int, float] | None:
        elapsed = self.get_run_time()  # type: ignore[no-untyped-call]
        for users, seconds in STAGES:
            if elapsed < seconds:
                return users, float(users)
            elapsed -= seconds
        return None


def poisson_pacing(rate: float, rng: random.Random) -> Callable[[User], float]:
    """Wait so that the user's requests start as a Poisson process of ``rate``/s, whatever each one takes.

    Why not ``constant_throughput``: users spawned together stay in lock step with it, so the acceptance test's
    10 users sent bursts of 10 concurrent requests every 1/3 s: latency measured the burst's queue (p50 10.8 ms
    against 2.1 ms for one user), and not the 30 req/s of independent callers the test means. Independent
    Poisson users sum to a Poisson arrival of the total rate. Behind schedule (a slow answer), the user sends at
    once until it catches up, so the offered rate does not sag with latency (open loop, up to the user count).
    """
    schedule: dict[int, float] = {}

    def wait(user: User) -> float:
        now = time.monotonic()
        due = max(schedule.get(id(user), now), now - 1.0) + rng.expovariate(rate)
        schedule[id(user)] = due
        return max(0.0, due - now)

    return wait


class GatewayUser(FastHttpUser):
    # FastHttpUser (geventhttpclient): the client's own cost per request is a fraction of HttpUser's (requests),
    # so less of it is in the measured latency.
    wait_time = poisson_pacing(USER_RATE, random.Random(7)) if USER_RATE > 0 else constant(0)

    def on_start(self) -> None:
        """Start each user at a random point of its first interval (locust starts them all at once)."""
        if USER_RATE > 0:
            time.sleep(
                random.uniform(0.0, 1.0 / USER_RATE)
            )  # gevent-patched by locust: yields to other users

    @task
    def recommend(self) -> None:
        user, body = next(_NEXT)
        headers = {"content-type": "application/json", "x-api-key": os.environ["FORKCAST_LOAD_API_KEY"]}
        self.client.post(
            f"/recommend/{user}",
            data=body,  # type: ignore[arg-type]  # documented "String/bytes"; the annotation says str
            headers=headers,
            name="/recommend/{user_id}",
        )


def _keep_environment(environment: Environment, **_: Any) -> None:
    _ENV.append(environment)


def _record(response_time: float, start_time: float, response: Any, exception: Any, **_: Any) -> None:
    status = (
        0 if exception is not None and response is None else int(getattr(response, "status_code", 0) or 0)
    )
    if exception is not None and status == 200:
        status = -1  # a 200 that locust still counted as a failure
    runner = _ENV[0].runner if _ENV else None
    _RECORDS.append((start_time, response_time, status, runner.user_count if runner else 0))


def _write_log(**_: Any) -> None:
    path = os.environ.get("FORKCAST_LOAD_LOG")
    if not path:
        return
    with Path(path).open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["start", "latency_ms", "status", "users"])
        writer.writerows(_RECORDS)


# locust's event hooks are untyped; registered by call rather than decorator so the functions keep their types.
events.init.add_listener(_keep_environment)  # type: ignore[no-untyped-call]
events.request.add_listener(_record)  # type: ignore[no-untyped-call]
events.quitting.add_listener(_write_log)  # type: ignore[no-untyped-call]
