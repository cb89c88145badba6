"""``forkcast-lake maintain`` on local served-log tables: small files merged, old days dropped and vacuumed.

Local Delta tables exercise the same delta-rs operations as S3 (optimize, delete, overwrite with a predicate,
vacuum); the S3 listing of the size report is covered by the integration test.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable
from pydantic import ValidationError

from forkcast_lake.pit_testing import LogWriter
from forkcast_lake.retention import RetentionSettings, compact, drop_days, maintain, vacuum
from forkcast_lake.storage import table_uri

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
OLD = NOW.timestamp() - 40 * 86400  # 2027-01-20: past a 30-day policy
NEW = NOW.timestamp() - 3600


def _served(lake: Path, batches: int = 1) -> None:
    # In arrival order (a stream's ids never go back, and ``date`` is the day of the id's milliseconds).
    log = LogWriter()
    for day, ts in (("old", OLD), ("new", NEW)):
        for i in range(30):
            log.prediction(f"{day}{i}", ts + i, i, {1: 0.5, 2: 0.25})
            log.feedback(f"{day}{i}", 1, True, ts + i + 1)
    log.user_update(7, [0.1] * 30, OLD)  # superseded by the next: goes with the old day
    log.user_update(7, [0.2] * 30, OLD + 60)  # superseded only by a recent update: kept (served until it)
    log.user_update(8, [0.3] * 30, OLD + 61)  # user 8's newest value: kept however old
    log.user_update(7, [0.4] * 30, NEW)
    log.commit(str(lake), batches=batches)


def _rows(uri: str, version: int | None = None) -> pl.DataFrame:
    return pl.read_delta(uri, version=version).drop("date").sort("stream_id")


def test_compaction_merges_small_files_and_keeps_rows_and_history(tmp_path: Path) -> None:
    _served(tmp_path, batches=10)
    uri = table_uri(str(tmp_path), "served/predictions")
    before_version, before_rows = DeltaTable(uri).version(), _rows(uri)
    files_before, files_after = compact(uri, target_bytes=2**26)
    assert files_before >= 10 and files_after == 2  # one file per day partition
    assert _rows(uri).equals(before_rows)
    assert _rows(uri, before_version).equals(before_rows)  # time travel to the version before optimize
    assert DeltaTable(uri).version() == before_version + 1  # one commit


def test_old_days_go_after_vacuum_and_recent_ones_stay_untouched(tmp_path: Path) -> None:
    _served(tmp_path)
    uri = table_uri(str(tmp_path), "served/feedback")
    new_files = sorted(f for f in DeltaTable(uri).file_uris() if "2027-03-01" in f)
    assert drop_days(uri, "2027-01-30") == 30
    old_dir = Path(uri) / "date=2027-01-20"
    assert list(old_dir.glob("*.parquet"))  # deleted from the table, still on disk for older readers
    assert vacuum(uri, retention_hours=0) >= 1
    assert not list(old_dir.glob("*.parquet"))  # gone after the retention period
    assert sorted(DeltaTable(uri).file_uris()) == new_files  # the recent day's files are the same files
    assert _rows(uri)["rid"].str.starts_with("new").all() and _rows(uri).height == 30


def test_maintain_applies_the_policy_to_every_table_and_reports_bytes_per_prediction(tmp_path: Path) -> None:
    _served(tmp_path, batches=3)
    settings = RetentionSettings(
        environment="local", FORKCAST_LAKE_KEEP_DAYS=30, FORKCAST_LAKE_VACUUM_RETENTION_HOURS=0
    )  # type: ignore[call-arg]
    report = maintain(str(tmp_path), settings, now=NOW)
    assert report.cutoff_date == "2027-01-30"
    tables = {t.table: t for t in report.tables}
    assert tables["served/predictions"].rows_deleted == 30 and tables["served/predictions"].rows == 30
    assert tables["served/feedback"].rows == 30
    updates = _rows(table_uri(str(tmp_path), "served/feature_updates"))
    assert sorted(
        zip(updates["entity_id"], updates["features"].list.first().cast(pl.Float64).round(2), strict=True)
    ) == [
        (7, 0.2),  # the newest of user 7's old updates: the kept predictions before 0.4 were served with it
        (7, 0.4),
        (8, 0.3),
    ]
    assert report.predictions == 30 and report.served_pairs == 60
    stored = sum(t.stored_bytes for t in report.tables)
    assert stored > sum(t.data_bytes for t in report.tables) > 0
    assert report.bytes_per_prediction == stored / 30


def test_a_vacuum_retention_under_an_hour_is_refused_outside_local() -> None:
    with pytest.raises(ValidationError, match="FORKCAST_LAKE_VACUUM_RETENTION_HOURS"):
        RetentionSettings(environment="production", FORKCAST_LAKE_VACUUM_RETENTION_HOURS=0)  # type: ignore[call-arg]
    local = RetentionSettings(environment="local", FORKCAST_LAKE_VACUUM_RETENTION_HOURS=0)  # type: ignore[call-arg]
    assert local.vacuum_retention_hours == 0
