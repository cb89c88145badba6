"""Dataset snapshots against a real SeaweedFS (weed mini): publish, idempotence, time travel by version and by time,
schema enforcement, and a corrupted or missing table refused with its name."""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import boto3
import polars as pl
import pytest

from forkcast_contract.dataset import DatasetSizes
from forkcast_contract.feature_store import version_name
from forkcast_contract.features import feature_schema_hash
from forkcast_data.generate import GenerateRequest, generate
from forkcast_devservers.servers import Seaweed
from forkcast_lake.cli import main as cli_main
from forkcast_lake.datasets import LakeDataError, SchemaMismatchError, publish
from forkcast_lake.datasets_fetch import resolve
from forkcast_lake.datasets_read import open_data
from forkcast_lake.pit_snapshots import feature_sources
from forkcast_lake.settings import get_settings
from forkcast_lake.storage import storage_options

SIZES = DatasetSizes(
    users=300,
    restaurants=1_100,
    train_files=2,
    test_files=1,
    rows_per_file=1_000,
    requests=5,
    candidates=1_000,
)
_buckets = itertools.count()


@pytest.fixture
def lake(seaweed: Seaweed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh bucket's ``s3://…/ds`` prefix, with the S3 settings and a per-test dataset cache in the env."""
    bucket = f"lake-ds-{next(_buckets)}"
    for name, value in seaweed.client_env(bucket).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FORKCAST_ENVIRONMENT", "local")
    monkeypatch.setenv("FORKCAST_DATASET_CACHE", str(tmp_path / "cache"))
    get_settings.cache_clear()
    yield f"s3://{bucket}/ds"
    get_settings.cache_clear()


def _draw(out: Path, drift: float = 0.0) -> Path:
    generate(GenerateRequest(out=out, preset="micro", sizes=SIZES, drift=drift, progress=False))
    return out


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.parquet"))
    }


def _s3(seaweed: Seaweed) -> object:
    return boto3.client(
        "s3",
        endpoint_url=seaweed.endpoint,
        aws_access_key_id=seaweed.access_key,
        aws_secret_access_key=seaweed.secret_key,
        region_name="us-east-1",
    )


def test_publish_is_idempotent_and_versions_read_back_their_own_bytes(lake: str, tmp_path: Path) -> None:
    first, second = _draw(tmp_path / "a"), _draw(tmp_path / "b", drift=0.5)
    v0 = publish(first, lake)
    again = publish(first, lake)
    assert (v0.version, v0.created) == (0, True)
    assert (again.version, again.created) == (0, False)  # the same dataset adds no version
    # Delta time travel by time compares with each commit's log-file modification time, which SeaweedFS keeps to
    # the second: a time more than a second from either commit resolves unambiguously.
    time.sleep(1.1)
    between = datetime.now(UTC)
    time.sleep(1.1)
    v1 = publish(second, lake)
    assert (v1.version, v1.created) == (1, True)

    latest = open_data(lake)
    assert latest.snapshot is not None and latest.snapshot.version == 1
    assert _digests(latest.directory) == _digests(second)
    older = open_data(lake, "0")
    assert _digests(older.directory) == _digests(first)  # time travel: the older bytes, verified by sha256
    assert older.record() == {
        "uri": lake,
        "version": 0,
        "fingerprint": v0.fingerprint,
        "tables": v0.table_versions,
    }
    assert resolve(lake, between).manifest.fingerprint == v0.fingerprint  # the newest version at that time
    # Each table is an ordinary Delta table: polars reads the current and the older train rows.
    train_uri = f"{lake}/train"
    now_rows = pl.read_delta(train_uri, storage_options=storage_options())
    old_rows = pl.read_delta(train_uri, version=v0.table_versions["train"], storage_options=storage_options())
    assert now_rows.height == old_rows.height == 2_000
    assert not now_rows.equals(old_rows)


def test_a_file_of_the_wrong_type_is_refused_naming_the_column_and_nothing_is_committed(
    lake: str, tmp_path: Path
) -> None:
    data = _draw(tmp_path / "a")
    publish(data, lake)
    bad = _draw(tmp_path / "b", drift=0.5)
    path = bad / "restaurant_features.parquet"
    pl.read_parquet(path).with_columns(pl.col("latitude").cast(pl.Float32)).write_parquet(path)
    with pytest.raises(
        SchemaMismatchError, match=r"table restaurants: column 'latitude' .* is Float32, .* Float64"
    ):
        publish(bad, lake)
    assert resolve(lake).version == 0  # no snapshot was added


def test_a_corrupted_file_is_refused_with_its_table_and_name(
    lake: str, tmp_path: Path, seaweed: Seaweed
) -> None:
    result = publish(_draw(tmp_path / "a"), lake)
    bucket = lake.split("/")[2]
    key = f"ds/test/{result.fingerprint[:16]}/test_00.parquet"
    _s3(seaweed).put_object(Bucket=bucket, Key=key, Body=b"not the published bytes")  # type: ignore[attr-defined]
    with pytest.raises(LakeDataError, match=r"table test file test_00\.parquet is corrupted"):
        open_data(lake)


def test_a_missing_table_is_refused_with_its_name(lake: str, tmp_path: Path, seaweed: Seaweed) -> None:
    publish(_draw(tmp_path / "a"), lake)
    client = _s3(seaweed)
    bucket = lake.split("/")[2]
    listed = client.list_objects_v2(Bucket=bucket, Prefix="ds/users/_delta_log/")  # type: ignore[attr-defined]
    for obj in listed["Contents"]:
        client.delete_object(Bucket=bucket, Key=obj["Key"])  # type: ignore[attr-defined]
    with pytest.raises(LakeDataError, match=r"table users is missing"):
        open_data(lake)


def test_an_unpublished_prefix_is_refused(lake: str, tmp_path: Path) -> None:
    publish(_draw(tmp_path / "a"), lake)  # the bucket exists; the prefix below is empty
    with pytest.raises(LakeDataError, match=r"ds-none: no dataset published here"):
        open_data(lake + "-none")


def test_the_lake_cli_publishes_and_shows_a_version(
    lake: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _draw(tmp_path / "a")
    assert cli_main(["dataset", "publish", str(data), "--to", lake]) == 0
    assert f"published {lake} version 0" in capsys.readouterr().out
    assert cli_main(["dataset", "show", "--data", lake, "--data-version", "0"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["uri"], shown["version"], shown["preset"]) == (lake, 0, "micro")
    assert cli_main(["dataset", "show", "--data", lake, "--data-version", "7"]) == 1
    assert "no dataset version 7 (versions 0..0)" in capsys.readouterr().err


def test_a_training_table_feature_source_with_a_corrupted_file_is_refused(
    lake: str, tmp_path: Path, seaweed: Seaweed
) -> None:
    """``forkcast-lake training-table --features-from s3://…`` hashes the users and restaurants files of the feature
    version it needs before reading them with polars (forkcast_lake.datasets_fetch.verify_tables)."""
    result = publish(_draw(tmp_path / "a"), lake)
    fv = version_name(result.fingerprint, feature_schema_hash())
    assert feature_sources([lake], [fv])[fv].fingerprint == result.fingerprint
    bucket = lake.split("/")[2]
    key = f"ds/users/{result.fingerprint[:16]}/user_features.parquet"
    _s3(seaweed).put_object(Bucket=bucket, Key=key, Body=b"not the published bytes")  # type: ignore[attr-defined]
    with pytest.raises(LakeDataError, match=r"table users file user_features\.parquet is corrupted"):
        feature_sources([lake], [fv])
