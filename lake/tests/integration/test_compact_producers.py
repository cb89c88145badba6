"""The three real producers' records (inference's EventSink, the gateway's feedback script and admin update log) go
into the served-log tables with their values intact: what a training row or the lake's AUC reads is what was served.
Real redis-server and weed mini; the producers' own classes, not copies of their encodings."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import numpy as np
import redis
import redis.asyncio as aioredis
from deltalake import DeltaTable

from forkcast_contract.feature_store import restaurant_value, unpack_restaurants
from forkcast_contract.streams import FEATURE_UPDATES_STREAM, FEEDBACK_STREAM, PREDICTIONS_STREAM
from forkcast_devservers.servers import RedisServer
from forkcast_gateway import feature_updates as updates
from forkcast_gateway import feedback, schemas
from forkcast_inference import events
from forkcast_inference import metrics as inference_metrics
from forkcast_lake.compact import Compactor
from forkcast_lake.compact_settings import CompactSettings
from forkcast_lake.storage import storage_options


async def _gateway_writes(url: str) -> None:
    client = aioredis.Redis.from_url(url)
    writer = feedback.FeedbackWriter(client, FEEDBACK_STREAM, 100_000, 630)
    for restaurant, clicked in ((11, True), (12, False)):
        event = schemas.FeedbackEvent(
            request_id="rid-a", restaurant_id=restaurant, clicked=clicked, time=1.7e9 + 2
        )
        assert await writer.write(event, "k-app") is not None
    log = updates.UpdateLog(client, FEATURE_UPDATES_STREAM, 100_000)
    value = restaurant_value(13.7512345678, 100.5, [i / 3 for i in range(10)])
    await log.record("restaurant", 12, "fv-1", value, "ops", 1.7e9 + 1)
    await client.aclose()


def test_real_producers_records_reach_the_tables_intact(redis_server_factory: Any, lake: str) -> None:
    server: RedisServer = redis_server_factory()
    client = redis.Redis.from_url(server.url)
    sink = events.EventSink(client, PREDICTIONS_STREAM, 100_000, 100, inference_metrics.Metrics())
    scores = [0.9312345678901234, 1 / 3]
    sink.add(events.Event("rid-a", 1.7e9, 42, "v1", "fv-1", [11, 12], scores, "k-app"))
    assert sink.flush() == 1
    asyncio.run(_gateway_writes(server.url))

    settings = CompactSettings(
        environment="local",
        lake_uri=lake,
        events_redis_url=server.url,
        block_ms=20,
        keep_seconds=0,
    )
    compactor = Compactor(client, settings)
    compactor.start()
    while compactor.step():
        pass
    compactor.flush_all()

    def rows(name: str) -> list[dict[str, Any]]:
        table = DeltaTable(f"{settings.lake_uri}/served/{name}", storage_options=storage_options(settings))
        return sorted(table.to_pyarrow_table().to_pylist(), key=lambda r: r["stream_id"])

    (prediction,) = rows("predictions")
    assert prediction["scores"] == scores, "a served score changed on its way to the lake"
    assert (prediction["rid"], prediction["user_id"], prediction["restaurant_ids"]) == ("rid-a", 42, [11, 12])
    assert (prediction["model_version"], prediction["feature_version"], prediction["key_id"]) == (
        "v1",
        "fv-1",
        "k-app",
    )
    assert [(r["rid"], r["restaurant_id"], r["clicked"], r["key_id"]) for r in rows("feedback")] == [
        ("rid-a", 11, True, "k-app"),
        ("rid-a", 12, False, "k-app"),
    ]
    (update,) = rows("feature_updates")
    stored = unpack_restaurants([restaurant_value(13.7512345678, 100.5, [i / 3 for i in range(10)])])
    np.testing.assert_array_equal(np.float32(update["features"]), stored.features[0])
    assert (
        update["latitude"] == float(stored.latitude[0]) == 13.7512346
    )  # quantised to 1e-7 degree, as stored
    # Partitioned by the day the events Redis received it (the entry id's ms), the producer's ts kept as a column.
    arrived = datetime.fromtimestamp(int(update["stream_id"].split("-")[0]) / 1000, UTC).strftime("%Y-%m-%d")
    assert (update["entity"], update["entity_id"], update["actor"], update["date"], update["ts"]) == (
        "restaurant", 12, "ops", arrived, 1.7e9 + 1
    )  # fmt: skip
    assert arrived != "2023-11-14"  # the day of its ts (1.7e9 + 1), which no longer decides the partition
    assert [client.xlen(s) for s in (PREDICTIONS_STREAM, FEEDBACK_STREAM, FEATURE_UPDATES_STREAM)] == [
        0,
        0,
        0,
    ]
