"""Trimming after commit never removes what the online-AUC job's consumer group has not read or acknowledged, and
two compactors racing on one group neither skip nor duplicate a row (real redis-server and weed mini)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import redis
from deltalake import DeltaTable

from forkcast_contract.streams import FEEDBACK_STREAM, PREDICTIONS_STREAM
from forkcast_devservers.servers import RedisServer
from forkcast_lake.compact import Compactor
from forkcast_lake.compact_settings import CompactSettings
from forkcast_lake.compact_trim import safe_bound
from forkcast_lake.storage import storage_options
from forkcast_lake.stream_ids import StreamId
from forkcast_lake.testing import prediction_fields, produce

STREAMS = {"predictions": PREDICTIONS_STREAM, "feedback": FEEDBACK_STREAM}
AUC_GROUP = "online-auc"


def _settings(lake: str, redis_url: str, **extra: Any) -> CompactSettings:
    fields = {"block_ms": 20, "batch_seconds": 3600, "keep_seconds": 0, **extra}  # 0: no recent window kept
    return CompactSettings(environment="local", lake_uri=lake, events_redis_url=redis_url, **fields)


def _drain(compactor: Compactor) -> None:
    while compactor.step():
        pass
    compactor.flush_all()


def test_trim_keeps_what_the_online_auc_group_has_not_read_or_acked(
    redis_server_factory: Any, lake: str
) -> None:
    server: RedisServer = redis_server_factory()
    client = redis.Redis.from_url(server.url)
    client.xgroup_create(PREDICTIONS_STREAM, AUC_GROUP, id="0", mkstream=True)
    produce(client, STREAMS, 100, time.time())
    ids = [entry_id for entry_id, _ in client.xrange(PREDICTIONS_STREAM)]
    # The online-AUC job read the first 60 predictions and acknowledged the first 40: 40..59 are pending.
    client.xreadgroup(AUC_GROUP, "auc-0", {PREDICTIONS_STREAM: ">"}, count=60)
    client.xack(PREDICTIONS_STREAM, AUC_GROUP, *ids[:40])

    compactor = Compactor(client, _settings(lake, server.url))
    compactor.start()
    _drain(compactor)

    # Everything is committed, yet the predictions stream keeps the group's oldest pending entry and all after it.
    assert compactor.streams[PREDICTIONS_STREAM].committed == StreamId.parse(ids[-1])
    assert [e for e, _ in client.xrange(PREDICTIONS_STREAM)] == ids[40:], "trimmed past a pending entry"
    bound = safe_bound(client, PREDICTIONS_STREAM, compactor.streams[PREDICTIONS_STREAM].committed)
    assert bound.held_by == f"group {AUC_GROUP} (pending)"
    # The feedback stream has no other group: trimmed to empty once committed.
    assert client.xlen(FEEDBACK_STREAM) == 0

    # The group acknowledges everything it read: the stream may now go up to its last-delivered id, no further.
    client.xack(PREDICTIONS_STREAM, AUC_GROUP, *ids[40:60])
    compactor.trim(compactor.streams[PREDICTIONS_STREAM])
    assert [e for e, _ in client.xrange(PREDICTIONS_STREAM)] == ids[60:], "trimmed past unread entries"
    assert safe_bound(client, PREDICTIONS_STREAM, None).held_by == "lake"


def test_trim_never_passes_the_committed_position(redis_server_factory: Any, lake: str) -> None:
    server: RedisServer = redis_server_factory()
    client = redis.Redis.from_url(server.url)
    produce(client, STREAMS, 50, time.time())
    compactor = Compactor(client, _settings(lake, server.url))
    compactor.start()
    _drain(compactor)
    produce(client, STREAMS, 30, time.time(), prefix="late")  # read by nobody yet
    compactor.trim(compactor.streams[PREDICTIONS_STREAM])
    left = [fields[b"rid"].decode() for _, fields in client.xrange(PREDICTIONS_STREAM)]
    assert left == [f"late{i:09d}" for i in range(30)], "entries after the committed position were trimmed"


def test_two_compactors_racing_neither_skip_nor_duplicate(redis_server_factory: Any, lake: str) -> None:
    server: RedisServer = redis_server_factory()
    client = redis.Redis.from_url(server.url)
    served = produce(client, STREAMS, 400, time.time())
    # Two jobs at once (a rollout that overlaps), each with a batch open when the other commits.
    settings = _settings(lake, server.url, read_count=400)
    a = Compactor(client, settings)
    b = Compactor(redis.Redis.from_url(server.url), settings)
    a.start()
    b.start()
    for _ in range(3):
        a.step()
        b.step()
    b.flush_all()  # b commits first: a's snapshot is now stale
    a.flush_all()  # refused by delta-rs (concurrent transaction), a reloads the position
    for _ in range(100):  # both drain the streams, each committing whenever its snapshot is current
        read = a.step() + b.step()
        a.flush_all()
        b.flush_all()
        if not read:
            break
    options = storage_options(settings)
    rows = DeltaTable(f"{lake}/served/predictions", storage_options=options).to_pyarrow_table(columns=["rid"])
    counts = Counter(rows.column("rid").to_pylist())
    assert sorted(counts) == sorted(served.predictions), "a prediction was skipped"
    assert max(counts.values()) == 1, "a prediction was committed twice"
    feedback = DeltaTable(f"{lake}/served/feedback", storage_options=options).to_pyarrow_table(
        columns=["rid"]
    )
    assert feedback.num_rows == len(served.feedback)


def test_the_recent_window_stays_for_the_drift_job(redis_server_factory: Any, lake: str) -> None:
    """Committed entries younger than FORKCAST_COMPACT_KEEP_SECONDS stay: the drift job samples the newest
    predictions with XREVRANGE, outside any group; older committed ones go."""
    server: RedisServer = redis_server_factory()
    client = redis.Redis.from_url(server.url)
    old = time.time() - 7200  # two hours ago: entries with explicit old ids, as if written then
    for i in range(20):
        fields = prediction_fields(f"old{i}", old, 1, [1], [0.5], "k1")
        client.xadd(PREDICTIONS_STREAM, fields, id=f"{int(old * 1000) + i}-0")  # type: ignore[arg-type]
    produce(client, STREAMS, 30, time.time(), prefix="new")
    compactor = Compactor(client, _settings(lake, server.url, keep_seconds=3600))
    compactor.start()
    _drain(compactor)
    left = [fields[b"rid"].decode() for _, fields in client.xrange(PREDICTIONS_STREAM)]
    assert left == [f"new{i:09d}" for i in range(30)], "the last hour was trimmed, or older entries were kept"
    assert client.xlen(FEEDBACK_STREAM) == 300, "recent feedback was trimmed"
