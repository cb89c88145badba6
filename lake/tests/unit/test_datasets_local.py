"""The parts of dataset snapshots that need no server: --data-version parsing, the schema check a publish runs on
every file, and a local directory passing through open_data untouched."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import SchemaMismatchError as DeltaSchemaMismatch

from forkcast_contract.dataset import CLICK_COLUMNS
from forkcast_lake.datasets import TABLES, SchemaMismatchError, arrow_schema, check_file_schema
from forkcast_lake.datasets_read import LakeDataError, open_data, parse_data_version

TRAIN = next(t for t in TABLES if t.name == "train")


def _clicks(**overrides: pl.Expr) -> pl.DataFrame:
    frame = pl.DataFrame(
        {"user_id": [1, 2], "restaurant_id": [3, 4], "click": [0, 1]},
        schema=dict.fromkeys(CLICK_COLUMNS, pl.Int64),
    )
    return frame.with_columns(**overrides) if overrides else frame


def test_data_version_is_a_number_or_a_zoned_time() -> None:
    assert parse_data_version("3") == 3
    assert parse_data_version(None) is None and parse_data_version("") is None
    assert parse_data_version("2026-12-05T02:00:00Z") == datetime(2026, 12, 5, 2, tzinfo=UTC)
    with pytest.raises(ValueError, match="has no time zone"):
        parse_data_version("2026-12-05T02:00:00")
    with pytest.raises(ValueError, match="neither a version number nor an ISO-8601 time"):
        parse_data_version("latest")


def test_a_contract_file_passes_the_schema_check(tmp_path: Path) -> None:
    _clicks().write_parquet(tmp_path / "train_00.parquet")
    check_file_schema(tmp_path / "train_00.parquet", TRAIN)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (
            _clicks(click=pl.col("click").cast(pl.Int32)),
            r"column 'click' of train_00.parquet is Int32, the contract says Int64",
        ),
        (_clicks().drop("restaurant_id"), r"has no column 'restaurant_id'"),
        (_clicks(extra=pl.lit(1.0)), r"columns the contract lacks: \['extra'\]"),
        (_clicks().select("click", "user_id", "restaurant_id"), r"in another order"),
    ],
)
def test_a_file_off_the_contract_is_refused_naming_the_column(
    tmp_path: Path, frame: pl.DataFrame, message: str
) -> None:
    frame.write_parquet(tmp_path / "train_00.parquet")
    with pytest.raises(SchemaMismatchError, match=rf"table train: .*{message}"):
        check_file_schema(tmp_path / "train_00.parquet", TRAIN)


def test_a_local_directory_passes_through_and_records_no_snapshot(tmp_path: Path) -> None:
    data = open_data(str(tmp_path))
    assert data.directory == tmp_path and data.record() is None
    with pytest.raises(ValueError, match="--data-version applies to an s3:// dataset"):
        open_data(str(tmp_path), "2")


def test_delta_refuses_an_uncastable_column_by_name_but_casts_floats_hence_publish_checks_itself(
    tmp_path: Path,
) -> None:
    """Why publish runs check_file_schema: delta-rs's own enforcement is a cast (deltalake 1.6.6)."""
    uri = str(tmp_path / "train")
    DeltaTable.create(uri, schema=arrow_schema(CLICK_COLUMNS))
    wrong = pa.table({"user_id": [1], "restaurant_id": [2], "click": pa.array([[1]], pa.list_(pa.int64()))})
    with pytest.raises(DeltaSchemaMismatch, match="Cannot cast field click from List"):
        write_deltalake(uri, wrong, mode="append")
    unknown = pa.table({"user_id": [1], "restaurant_id": [2], "clicked": [1]})
    with pytest.raises(DeltaSchemaMismatch, match="Field clicked not found in schema"):
        write_deltalake(uri, unknown, mode="append")
    write_deltalake(uri, pa.table({"user_id": [1], "restaurant_id": [2], "click": [1.0]}), mode="append")
    assert DeltaTable(uri).version() == 1  # the Float64 column was accepted into the Int64 one


def test_a_fetching_process_killed_by_a_signal_is_reported_as_a_crash_not_as_the_data(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The child's last stderr line is kept, and the signal named: SIGABRT is the native runtime, not a bad URI."""
    died = subprocess.CompletedProcess(
        args=[], returncode=-6, stdout="", stderr="terminate called without an active exception\n"
    )
    monkeypatch.setattr(subprocess, "run", lambda *_a, **_k: died)
    with pytest.raises(LakeDataError) as caught:
        open_data("s3://lake/datasets/tiny")
    assert str(caught.value) == (
        "the fetching process died of SIGABRT (terminate called without an active exception)"
    )
