"""Kill-mid-compaction (issue 16.3): a real ``forkcast-lake compact`` process SIGKILLed before its commit, between
its commit and its trim, and after its trim; a restarted job then leaves every produced entry in the tables exactly
once and the streams trimmed. The stop points come from the test-only hook FORKCAST_COMPACT_FAULT (the job writes a
marker file and sleeps there; the test SIGKILLs it, so no cleanup code of the job runs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import redis
from deltalake import DeltaTable

from forkcast_contract.streams import FEEDBACK_STREAM, PREDICTIONS_STREAM
from forkcast_devservers.ports import free_port
from forkcast_devservers.servers import RedisServer, Seaweed
from forkcast_lake.compact import app_id
from forkcast_lake.stream_ids import StreamId
from forkcast_lake.testing import Served, produce

STREAMS = {"predictions": PREDICTIONS_STREAM, "feedback": FEEDBACK_STREAM}
pytestmark = pytest.mark.slow  # two CLI processes per case (≈ 4 s of imports each on the shared VM)


def _env(seaweed: Seaweed, redis_url: str, lake: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        **seaweed.client_env(lake.split("/")[2]),
        "FORKCAST_ENVIRONMENT": "local",
        "FORKCAST_LAKE_URI": lake,
        "FORKCAST_EVENTS_REDIS_URL": redis_url,
        "FORKCAST_METRICS_PORT": str(free_port()),
        "FORKCAST_COMPACT_BATCH_SECONDS": "0.2",
        "FORKCAST_COMPACT_BLOCK_MS": "50",
        "FORKCAST_COMPACT_KEEP_SECONDS": "0",  # trim all that is committed (no recent window kept for drift)
        **extra,
    }


def _compact(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "forkcast_lake.cli", "compact", *args], env=env)


def _table(seaweed: Seaweed, lake: str, name: str) -> DeltaTable:
    options = {
        "aws_endpoint_url": seaweed.endpoint,
        "aws_allow_http": "true",
        "aws_region": "us-east-1",
        **{k.lower(): v for k, v in seaweed.env().items()},
    }
    return DeltaTable(f"{lake}/{name}", storage_options=options)


def _assert_exactly_once(seaweed: Seaweed, lake: str, served: Served) -> None:
    predictions = _table(seaweed, lake, "served/predictions").to_pyarrow_table(columns=["rid"])
    counts = Counter(predictions.column("rid").to_pylist())
    assert sorted(counts) == sorted(served.predictions), "a prediction is missing from the table or foreign"
    assert max(counts.values()) == 1, f"duplicated predictions: {[r for r, c in counts.items() if c > 1][:5]}"
    feedback = _table(seaweed, lake, "served/feedback").to_pyarrow_table(columns=["rid", "restaurant_id"])
    pairs = Counter(
        zip(feedback.column("rid").to_pylist(), feedback.column("restaurant_id").to_pylist(), strict=True)
    )
    assert sorted(pairs) == sorted(served.feedback), "a feedback event is missing or foreign"
    assert max(pairs.values()) == 1, "duplicated feedback"


@pytest.mark.parametrize("point", ["before-commit", "after-commit", "after-trim"])
def test_sigkill_at_any_point_neither_loses_nor_duplicates(
    point: str, redis_server_factory: object, seaweed: Seaweed, tmp_path: Path
) -> None:
    server: RedisServer = redis_server_factory()  # type: ignore[operator]
    client = redis.Redis.from_url(server.url)
    bucket = f"kill-{uuid.uuid4().hex[:8]}"
    seaweed.create_bucket(bucket)
    lake = f"s3://{bucket}/lake"
    first = produce(client, STREAMS, 300, time.time())
    marker = tmp_path / "stopped"
    job = _compact(_env(seaweed, server.url, lake, FORKCAST_COMPACT_FAULT=f"{point}:{marker}"))
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert job.poll() is None, f"the job ended (rc {job.returncode}) before reaching {point}"
            assert time.monotonic() < deadline, f"the job never reached {point}"
            time.sleep(0.05)
        os.kill(job.pid, signal.SIGKILL)
    finally:
        job.wait(10)
    assert job.returncode == -signal.SIGKILL

    # Where the kill left things: what the crashed job committed, and what is still in the streams.
    committed = {}
    for kind, stream in STREAMS.items():
        name = f"served/{kind}"
        try:
            version = _table(seaweed, lake, name).transaction_version(app_id(stream))
        except Exception:
            version = None
        committed[kind] = None if version is None else StreamId.from_version(version)
    if point == "before-commit":
        assert set(committed.values()) == {None}, f"a commit happened before the commit point: {committed}"
    else:
        done = [k for k, v in committed.items() if v is not None]
        assert len(done) == 1, f"exactly one batch committed before the kill, got {committed}"
        length = client.xlen(STREAMS[done[0]])
        produced = len(first.predictions) if done[0] == "predictions" else len(first.feedback)
        # after-commit: killed before the trim, every entry still there; after-trim: the committed ones are gone.
        assert length == (produced if point == "after-commit" else 0), f"{point}: {length} left of {produced}"

    # More traffic while the job is down, then a clean run drains everything.
    second = produce(client, STREAMS, 200, time.time(), prefix="s")
    rerun = _compact(_env(seaweed, server.url, lake), "--once")
    assert rerun.wait(120) == 0
    served = Served(first.predictions + second.predictions, first.feedback + second.feedback)
    _assert_exactly_once(seaweed, lake, served)
    assert client.xlen(PREDICTIONS_STREAM) == 0 and client.xlen(FEEDBACK_STREAM) == 0, (
        "committed entries not trimmed"
    )
