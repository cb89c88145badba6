"""Loss to the producers' MAXLEN cap during an S3 outage (real redis-server and weed mini): while every start and
step fails, the job still reports lag and the stream's last commit time from Redis alone, and counts exactly the
entries the cap deleted before it read them, once; the rows it did read stay exactly once."""

from __future__ import annotations

import threading
import time
from typing import Any

import redis
from deltalake import DeltaTable

from forkcast_contract.streams import FEEDBACK_STREAM
from forkcast_devservers.servers import RedisServer
from forkcast_lake.compact import Compactor
from forkcast_lake.compact_cli import run_forever
from forkcast_lake.compact_settings import CompactSettings
from forkcast_lake.served_log import SERVED_TABLES
from forkcast_lake.storage import storage_options
from forkcast_lake.testing import feedback_fields

FEEDBACK_ONLY = [t for t in SERVED_TABLES if t.stream == FEEDBACK_STREAM]


def _add(client: redis.Redis, first: int, count: int, maxlen: int | None = None) -> None:
    for i in range(first, first + count):
        fields = feedback_fields(f"r{i}", i, i % 2 == 0, time.time(), "k")
        client.xadd(FEEDBACK_STREAM, fields, maxlen=maxlen, approximate=False)  # type: ignore[arg-type]


def _sample(compactor: Compactor, metric: str) -> float | None:
    return compactor.metrics.registry.get_sample_value(metric, {"stream": FEEDBACK_STREAM})


class _Compactor(Compactor):
    """The job with an S3 outage switch: while ``s3_down``, every start fails as an unreachable S3 makes it."""

    s3_down = False

    def start(self) -> None:
        if self.s3_down:
            raise OSError("S3: connection refused")
        super().start()


def _events_redis(redis_server_factory: Any, lake: str) -> tuple[redis.Redis, CompactSettings]:
    """A fresh events Redis of its own and the job's settings on it and the test's lake."""
    server: RedisServer = redis_server_factory()
    settings = CompactSettings(
        environment="local", lake_uri=lake, events_redis_url=server.url, block_ms=20, keep_seconds=3600
    )
    return redis.Redis.from_url(server.url), settings


def test_an_s3_outage_still_reports_and_counts_what_the_cap_deleted_unread(
    redis_server_factory: Any, lake: str
) -> None:
    client, settings = _events_redis(redis_server_factory, lake)
    compactor = _Compactor(client, settings, tables=FEEDBACK_ONLY)
    assert _sample(compactor, "forkcast_lake_lost_entries_total") == 0.0  # exported at 0 before any loss
    _add(client, 0, 30)
    compactor.start()
    while compactor.step():
        pass
    compactor.flush_all()
    compactor.check_streams()  # caught up: learns that 30 entries were ever added up to its position
    caught_up = _sample(compactor, "forkcast_lake_last_commit_timestamp_seconds")
    assert caught_up is not None and caught_up >= time.time() - 5

    # S3 goes away: every start and step fails from now on. The producers go on; their cap (20, exact) deletes the
    # 30 committed entries (harmless: kept only for the recent window) and the first 30 of the 50 new ones, unread.
    compactor.s3_down = True
    stop = threading.Event()
    job = threading.Thread(target=run_forever, args=(compactor, stop, 0.05))
    job.start()
    try:
        time.sleep(0.3)
        _add(client, 30, 50, maxlen=20)
        deadline = time.monotonic() + 20
        while _sample(compactor, "forkcast_lake_lost_entries_total") != 30.0:
            assert time.monotonic() < deadline, _sample(compactor, "forkcast_lake_lost_entries_total")
            time.sleep(0.05)
        time.sleep(0.3)  # more checks: the same gap is not counted again
    finally:
        stop.set()
        job.join(timeout=30)
    assert compactor.metrics.ready_error == "OSError: S3: connection refused"
    assert _sample(compactor, "forkcast_lake_lost_entries_total") == 30.0
    lag = _sample(compactor, "forkcast_lake_lag_seconds")
    assert lag is not None and lag > 0.3  # the oldest uncommitted entry (r60) waited through the outage
    assert _sample(compactor, "forkcast_lake_last_commit_timestamp_seconds") == caught_up  # no commit since

    # S3 back: the 20 survivors are committed after the first 30, nothing twice; the gap is not counted again.
    compactor.s3_down = False
    compactor.start()
    while compactor.step():
        pass
    compactor.flush_all()
    compactor.check_streams()
    rows = DeltaTable(f"{lake}/served/feedback", storage_options=storage_options()).to_pyarrow_table()
    assert sorted(rows.column("restaurant_id").to_pylist()) == [*range(30), *range(60, 80)]
    assert _sample(compactor, "forkcast_lake_lost_entries_total") == 30.0


def test_a_restarted_job_counts_the_loss_from_the_count_its_last_commit_stored(
    redis_server_factory: Any, lake: str
) -> None:
    client, settings = _events_redis(redis_server_factory, lake)
    first = Compactor(client, settings, tables=FEEDBACK_ONLY)
    _add(client, 0, 30)
    first.start()
    while first.step():
        pass
    first.flush_all()
    first.check_streams()  # learns the count at the head; the next commit stores it
    _add(client, 30, 10)
    while first.step():
        pass
    first.flush_all()
    # The job is down; the cap (20) trims the 40 committed entries and the first 30 of 50 new ones, unread.
    _add(client, 40, 50, maxlen=20)
    second = Compactor(client, settings, tables=FEEDBACK_ONLY)
    second.start()
    second.check_streams()
    assert _sample(second, "forkcast_lake_lost_entries_total") == 30.0
    while second.step():
        pass
    second.flush_all()
    second.check_streams()
    assert _sample(second, "forkcast_lake_lost_entries_total") == 30.0  # counted once
    rows = DeltaTable(f"{lake}/served/feedback", storage_options=storage_options()).to_pyarrow_table()
    assert sorted(rows.column("restaurant_id").to_pylist()) == [*range(40), *range(70, 90)]
