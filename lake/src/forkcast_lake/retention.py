"""``forkcast-lake maintain``: small files merged, old days dropped, and what the served log costs per prediction.

The served-log tables (forkcast_lake.served_log: partitioned by ``date``, the UTC day each event
arrived in Redis: its stream id's milliseconds) get, per run:

1. **compaction** — delta-rs ``optimize.compact``: the small files the compaction job commits (one per batch) are
   rewritten into files of up to ``FORKCAST_LAKE_TARGET_FILE_BYTES``, one commit per table. Rows do not change and
   the versions before stay readable (time travel) until vacuumed.
2. **retention** — predictions and feedback older than ``FORKCAST_LAKE_KEEP_DAYS`` whole days go as one Delta
   ``delete`` on the ``date`` partition column (a metadata-only commit: whole files are removed). Feature updates are
   kept differently: an update is what an entity's value *is* until the next one, so of the updates older than the
   cutoff the newest per entity and feature version stays, even when a recent update supersedes it (predictions
   kept between the two were served with it); only old updates another old update replaced go, by an overwrite of
   the old partitions with their kept rows. A training table over the kept days then still finds the values served.
3. **vacuum** — files no version newer than ``FORKCAST_LAKE_VACUUM_RETENTION_HOURS`` references are deleted from
   storage (Delta's own rule: 168 h by default, so a reader or writer that started on an older version keeps its
   files for that long; the bytes of dropped days are freed only then).

The report gives the tables' bytes (the data files of the current version, and everything stored under each table:
log, checkpoints and not-yet-vacuumed files) per served prediction event and per served pair.
Every step is a commit with optimistic concurrency (delta-rs conflict checks), so it runs safely beside
``forkcast-lake compact`` appending to the same tables; a commit that loses a race is retried.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, TypeVar

import polars as pl
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError
from pydantic import Field

from forkcast_lake.served_log import SERVED_TABLES
from forkcast_lake.settings import LakeSettings
from forkcast_lake.storage import is_remote, options_for, split_s3_uri, table_uri
from forkcast_registry.s3 import S3Store

log = logging.getLogger(__name__)

PREDICTIONS_TABLE, FEEDBACK_TABLE, FEATURE_UPDATES_TABLE = (t.table for t in SERVED_TABLES)
_RETRIES: Final = 5
T = TypeVar("T")


class RetentionSettings(LakeSettings):
    """The retention policy (the lake's S3 inherited)."""

    # 30 days of served traffic: a retrain over the last week or two, and a month for the drift and AUC reviews.
    keep_days: int = Field(default=30, ge=1, validation_alias="FORKCAST_LAKE_KEEP_DAYS")
    # Delta's default (delta.deletedFileRetentionDuration = 1 week); below it a long reader could lose its files.
    vacuum_retention_hours: int = Field(
        default=168, ge=0, validation_alias="FORKCAST_LAKE_VACUUM_RETENTION_HOURS"
    )
    # delta-rs's own default target for optimize (100 MiB): a day of traffic at 30 req/s fits in a few files.
    target_file_bytes: int = Field(
        default=100 * 2**20, ge=2**20, validation_alias="FORKCAST_LAKE_TARGET_FILE_BYTES"
    )

    def unsafe_defaults(self) -> list[str]:
        # Under an hour, vacuum can delete the files a concurrent writer (the compaction job) has written but not
        # yet committed: the retention period is what keeps them. Tests use 0; a cluster never may.
        short = self.vacuum_retention_hours < 1
        return [*super().unsafe_defaults(), *(["FORKCAST_LAKE_VACUUM_RETENTION_HOURS"] if short else [])]


@dataclass
class TableReport:
    """What one table went through, and its size afterwards."""

    table: str
    files_before: int = 0
    files_after: int = 0
    rows_deleted: int = 0
    files_vacuumed: int = 0
    data_bytes: int = 0  # the data files of the current version
    stored_bytes: int = 0  # everything under the table's prefix (log, checkpoints, files not yet vacuumed)
    rows: int = 0


@dataclass
class MaintenanceReport:
    cutoff_date: str  # partitions before this day were dropped
    tables: list[TableReport] = field(default_factory=list)
    predictions: int = 0  # prediction events in the table
    served_pairs: int = 0  # (request, restaurant) pairs they served

    @property
    def bytes_per_prediction(self) -> float | None:
        stored = sum(t.stored_bytes for t in self.tables)
        return stored / self.predictions if self.predictions else None

    @property
    def bytes_per_served_pair(self) -> float | None:
        stored = sum(t.stored_bytes for t in self.tables)
        return stored / self.served_pairs if self.served_pairs else None


def _retrying(what: str, attempt: Callable[[], T]) -> T:
    """Run a commit; after a lost race (another writer committed first) run it again on the new version."""
    for n in range(1, _RETRIES + 1):
        try:
            return attempt()
        except CommitFailedError as exc:
            if n == _RETRIES:
                raise
            log.info("%s lost a commit race (%s); retrying", what, exc)
            time.sleep(0.1 * n)
    raise AssertionError("unreachable")


def _open(uri: str) -> DeltaTable:
    return DeltaTable(uri, storage_options=options_for(uri))


def stored_bytes(uri: str) -> int:
    """Bytes of every object under a table's prefix (its data files, log and checkpoints)."""
    if not is_remote(uri):
        return sum(p.stat().st_size for p in Path(uri).rglob("*") if p.is_file())
    bucket, prefix = split_s3_uri(uri)
    store = S3Store.from_settings(RetentionSettings().model_copy(update={"bucket": bucket}))
    pages = store.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/")
    return sum(int(obj["Size"]) for page in pages for obj in page.get("Contents", []))


def _file_count(uri: str) -> int:
    return len(_open(uri).file_uris())


def compact(uri: str, target_bytes: int) -> tuple[int, int]:
    """Merge the table's small files; (files before, files after)."""
    before = _file_count(uri)
    _retrying(f"optimize {uri}", lambda: _open(uri).optimize.compact(target_size=target_bytes))
    return before, _file_count(uri)


def drop_days(uri: str, cutoff: str) -> int:
    """Delete every row of a day before ``cutoff`` (``YYYY-MM-DD``); returns the rows deleted."""
    metrics = _retrying(f"delete {uri}", lambda: _open(uri).delete(predicate=f"date < '{cutoff}'"))
    return int(metrics.get("num_deleted_rows", 0) or 0)


def drop_superseded_updates(uri: str, cutoff: str) -> int:
    """Delete the feature updates of days before ``cutoff`` that a later update of the same entity in the same
    feature version replaced; returns the rows deleted. The old days' still-current rows are written back in the
    same commit (an overwrite with a predicate: Delta's replaceWhere)."""

    def attempt() -> int:
        table = _open(uri)
        rows = pl.from_arrow(table.to_pyarrow_table())
        assert isinstance(rows, pl.DataFrame)
        key = ["feature_version", "entity", "entity_id"]
        order = pl.col("stream_id").str.split_exact("-", 1).struct.unnest()
        ranked = rows.with_columns(order.cast(pl.Int64)).sort([*key, "field_0", "field_1"])
        old = ranked.filter(pl.col("date") < cutoff)
        # The newest update among the OLD rows, not the table's: an old update superseded only by a recent one
        # is still the value of the kept predictions served between the two, so it stays until a later old
        # update replaces it.
        newest = old.group_by(key, maintain_order=True).last().select("stream_id")
        keep = old.join(newest, on="stream_id", how="semi").drop("field_0", "field_1")
        if keep.height == old.height:
            return 0
        write_deltalake(
            table,
            keep.to_arrow().cast(pa.schema(table.schema().to_arrow())),
            mode="overwrite",
            predicate=f"date < '{cutoff}'",
        )
        return old.height - keep.height

    return _retrying(f"drop superseded updates {uri}", attempt)


def vacuum(uri: str, retention_hours: int) -> int:
    """Delete the files no version within ``retention_hours`` references; returns how many."""
    removed = _open(uri).vacuum(
        retention_hours=retention_hours, dry_run=False, enforce_retention_duration=False
    )
    return len(removed)


def retention_cutoff(keep_days: int, now: datetime | None = None) -> str:
    """The first day (``YYYY-MM-DD``, UTC) ``maintain`` keeps predictions and feedback of: today − ``keep_days``."""
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    return (today - timedelta(days=keep_days)).isoformat()


def maintain(base: str, settings: RetentionSettings, now: datetime | None = None) -> MaintenanceReport:
    """Compact, apply the retention policy to, vacuum and measure the served-log tables under ``base``."""
    cutoff = retention_cutoff(settings.keep_days, now)
    report = MaintenanceReport(cutoff)
    for name in (PREDICTIONS_TABLE, FEEDBACK_TABLE, FEATURE_UPDATES_TABLE):
        uri = table_uri(base, name)
        if not DeltaTable.is_deltatable(uri, storage_options=options_for(uri)):
            log.info("%s: no table yet", uri)
            continue
        t = TableReport(name)
        if name == FEATURE_UPDATES_TABLE:
            t.rows_deleted = drop_superseded_updates(uri, cutoff)
        else:
            t.rows_deleted = drop_days(uri, cutoff)
        t.files_before, t.files_after = compact(uri, settings.target_file_bytes)
        t.files_vacuumed = vacuum(uri, settings.vacuum_retention_hours)
        table = _open(uri)
        actions = pl.DataFrame(table.get_add_actions(flatten=True))
        t.data_bytes = int(actions["size_bytes"].sum()) if actions.height else 0
        t.rows = int(actions["num_records"].sum()) if actions.height else 0
        t.stored_bytes = stored_bytes(uri)
        if name == PREDICTIONS_TABLE:
            report.predictions = t.rows
            served = pl.scan_delta(uri, storage_options=options_for(uri)).select(
                pl.col("restaurant_ids").list.len().sum()
            )
            report.served_pairs = int(served.collect().item() or 0)
        report.tables.append(t)
    return report


def _run(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    if args.keep_days is not None:
        overrides["FORKCAST_LAKE_KEEP_DAYS"] = args.keep_days
    if args.vacuum_retention_hours is not None:
        overrides["FORKCAST_LAKE_VACUUM_RETENTION_HOURS"] = args.vacuum_retention_hours
    settings = RetentionSettings(**overrides)  # validated like the environment's values
    report = maintain(args.lake or settings.lake_uri, settings)
    out = asdict(report) | {
        "bytes_per_prediction": report.bytes_per_prediction,
        "bytes_per_served_pair": report.bytes_per_served_pair,
    }
    print(json.dumps(out, indent=2))
    return 0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``forkcast-lake maintain``."""
    parser = subparsers.add_parser(
        "maintain",
        help="compact the served-log tables, drop days past the retention policy, vacuum, report bytes/prediction",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("--lake", default=None, help="lake prefix (default FORKCAST_LAKE_URI)")
    parser.add_argument(
        "--keep-days", type=int, default=None, help="days of traffic kept (FORKCAST_LAKE_KEEP_DAYS)"
    )
    parser.add_argument(
        "--vacuum-retention-hours",
        type=int,
        default=None,
        help="files unreferenced for longer are deleted (FORKCAST_LAKE_VACUUM_RETENTION_HOURS, default 168)",
    )
    parser.set_defaults(run=_run)
