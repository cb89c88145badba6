"""``maintain`` against a real SeaweedFS while another process keeps appending to the served log, as the
compaction job does (maintain reruns until the writer is done: five runs overlapped it here): no appended row is
lost, old days go, and the size report counts what S3 stores."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import boto3
import polars as pl
import pytest

from forkcast_devservers.servers import Seaweed
from forkcast_lake.pit_testing import LogWriter
from forkcast_lake.retention import RetentionSettings, maintain
from forkcast_lake.settings import get_settings
from forkcast_lake.storage import storage_options

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
OLD, NEW = NOW.timestamp() - 40 * 86400, NOW.timestamp() - 3600
_buckets = itertools.count()

# The concurrent writer: 8 commits of 25 predictions each, stamped in the current day.
WRITER = """
import sys
from forkcast_lake.pit_testing import LogWriter
for b in range(8):
    log = LogWriter()
    for i in range(25):
        log.prediction(f"w{b}-{i}", float(sys.argv[2]) + b + i / 100, i, {1: 0.5, 2: 0.25})
    log.commit(sys.argv[1])
"""


@pytest.fixture
def bucket(seaweed: Seaweed, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"lake-ret-{next(_buckets)}"
    for key, value in seaweed.client_env(name).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("FORKCAST_ENVIRONMENT", "local")
    get_settings.cache_clear()
    boto3.client(
        "s3",
        endpoint_url=seaweed.endpoint,
        aws_access_key_id=seaweed.access_key,
        aws_secret_access_key=seaweed.secret_key,
        region_name="us-east-1",
    ).create_bucket(Bucket=name)
    yield name
    get_settings.cache_clear()


def test_maintain_beside_a_writer_loses_no_row_and_reports_stored_bytes(
    bucket: str, seaweed: Seaweed
) -> None:
    base = f"s3://{bucket}/lake"
    log = LogWriter()
    for day, ts in (("old", OLD), ("new", NEW)):  # arrival order: ``date`` is the day of the stream id
        for i in range(30):
            log.prediction(f"{day}{i}", ts + i, i, {1: 0.5, 2: 0.25})
            log.feedback(f"{day}{i}", 1, True, ts + i + 1)
    log.commit(base, batches=5)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, base, str(NEW + 100)], env=dict(os.environ))
    # An hour of vacuum retention: files the writer has written but not yet committed are younger than that.
    settings = RetentionSettings(FORKCAST_LAKE_KEEP_DAYS=30, FORKCAST_LAKE_VACUUM_RETENTION_HOURS=1)  # type: ignore[call-arg]
    reports = [maintain(base, settings, now=NOW)]
    while writer.poll() is None:
        reports.append(maintain(base, settings, now=NOW))
    assert writer.wait(timeout=120) == 0
    report = maintain(base, settings, now=NOW)

    rids = pl.read_delta(f"{base}/served/predictions", storage_options=storage_options())["rid"]
    assert rids.str.starts_with("w").sum() == 200  # every concurrent append survived compaction and deletes
    assert rids.str.starts_with("new").sum() == 30 and not rids.str.starts_with("old").any()
    assert reports[0].tables[0].rows_deleted == 30
    s3 = boto3.client(
        "s3",
        endpoint_url=seaweed.endpoint,
        aws_access_key_id=seaweed.access_key,
        aws_secret_access_key=seaweed.secret_key,
        region_name="us-east-1",
    )
    listed = sum(
        obj["Size"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="lake/served/")
        for obj in page.get("Contents", [])
    )
    assert sum(t.stored_bytes for t in report.tables) == listed
    assert report.predictions == 230 and report.bytes_per_prediction == listed / 230
