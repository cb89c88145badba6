"""A dataset's files and fingerprint are checked against dataset.json wherever the lake takes one in: publish (every
file hashed before any upload), resolve (the fingerprint recomputed from ``files``) and the training table's
feature sources (the two feature files hashed). Each refusal names the file or both fingerprints. Also: a dataset
version resolves to the row its own commit appended."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from deltalake import write_deltalake

from forkcast_contract.dataset import DATASET_MANIFEST_FILE, USER_FEATURES_FILE, read_manifest
from forkcast_lake.datasets import SNAPSHOT_SCHEMA, SNAPSHOTS_TABLE, LakeDataError, publish
from forkcast_lake.datasets_fetch import resolve
from forkcast_lake.pit_snapshots import feature_sources
from forkcast_lake.pit_testing import write_features_dataset

OTHER = "0" * 64


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, str]:
    """A small dataset directory (feature files only) and its feature version."""
    directory = tmp_path / "data"
    return directory, write_features_dataset(directory, users=5, restaurants=5)


def _tamper(directory: Path) -> None:
    """Rewrite the users file with one value changed: valid parquet, the same columns, other bytes."""
    path = directory / USER_FEATURES_FILE
    frame = pl.read_parquet(path)
    frame.with_columns(pl.col("f00") + 1.0).write_parquet(path)


def _forge_fingerprint(directory: Path) -> None:
    manifest = json.loads((directory / DATASET_MANIFEST_FILE).read_text())
    manifest["fingerprint"] = OTHER
    (directory / DATASET_MANIFEST_FILE).write_text(json.dumps(manifest))


def test_publish_refuses_a_file_whose_bytes_are_not_dataset_json_s_before_uploading(
    dataset: tuple[Path, str],
) -> None:
    directory, _ = dataset
    recorded = next(f for f in read_manifest(directory).files if f.path == USER_FEATURES_FILE)
    _tamper(directory)
    # No S3 is configured or reachable here: the refusal comes before any connection.
    with pytest.raises(LakeDataError) as refused:
        publish(directory, "s3://nowhere/datasets")
    assert f"{USER_FEATURES_FILE} is " in str(refused.value)
    assert f"but dataset.json records {recorded.bytes} bytes with sha256 {recorded.sha256}" in str(
        refused.value
    )


def test_publish_refuses_a_fingerprint_that_is_not_the_files(dataset: tuple[Path, str]) -> None:
    directory, _ = dataset
    _forge_fingerprint(directory)
    with pytest.raises(
        LakeDataError, match=f"fingerprint {OTHER} is not the fingerprint of the files it lists"
    ):
        publish(directory, "s3://nowhere/datasets")


def _snapshot_row(lake: Path, dataset_json: str, fingerprint: str, second: int) -> None:
    row = {
        "fingerprint": [fingerprint],
        "dataset_json": [dataset_json],
        "table_versions": [json.dumps({"users": 0, "restaurants": 0})],
        "published_at": [f"2026-12-05T00:00:{second:02d}+00:00"],
    }
    write_deltalake(str(lake / SNAPSHOTS_TABLE), pa.table(row, schema=SNAPSHOT_SCHEMA), mode="append")


def test_resolve_refuses_a_snapshot_whose_fingerprint_is_not_its_files(
    dataset: tuple[Path, str], tmp_path: Path
) -> None:
    directory, _ = dataset
    manifest = read_manifest(directory)
    lake = tmp_path / "lake"
    _snapshot_row(lake, manifest.model_dump_json(), manifest.fingerprint, 0)
    assert resolve(str(lake)).manifest.fingerprint == manifest.fingerprint  # the true one resolves
    forged = manifest.model_copy(update={"fingerprint": OTHER})
    _snapshot_row(lake, forged.model_dump_json(), OTHER, 1)
    with pytest.raises(LakeDataError) as refused:
        resolve(str(lake))
    assert f"{lake} dataset version 1: dataset.json's fingerprint {OTHER}" in str(refused.value)
    assert f"({manifest.fingerprint})" in str(refused.value)
    _snapshot_row(lake, manifest.model_dump_json(), OTHER, 2)  # the row says another dataset than its JSON
    with pytest.raises(
        LakeDataError, match=f"the snapshot row's fingerprint {OTHER} is not its dataset.json's"
    ):
        resolve(str(lake))


def test_a_feature_source_is_verified_before_a_training_table_reads_it(dataset: tuple[Path, str]) -> None:
    directory, fv = dataset
    assert feature_sources([str(directory)], [fv])[fv].fingerprint == read_manifest(directory).fingerprint
    _tamper(directory)
    with pytest.raises(LakeDataError, match=f"{USER_FEATURES_FILE} is .* but dataset.json records"):
        feature_sources([str(directory)], [fv])
    _forge_fingerprint(directory)
    with pytest.raises(LakeDataError, match=f"fingerprint {OTHER} is not the fingerprint of the files"):
        feature_sources([str(directory)], [fv])


def test_a_dataset_version_resolves_to_the_row_its_commit_appended_whatever_the_publisher_s_clock(
    tmp_path: Path,
) -> None:
    """Version N is the row committed at Delta version N of ``snapshots``: a publisher whose clock is behind wrote
    the newer row with the older ``published_at``, and the newest ``published_at`` would name the older dataset."""
    first, second = tmp_path / "first", tmp_path / "second"
    write_features_dataset(first, users=5, restaurants=5, seed=1)
    write_features_dataset(second, users=5, restaurants=5, seed=2)
    a, b = read_manifest(first), read_manifest(second)
    lake = tmp_path / "lake"
    _snapshot_row(lake, a.model_dump_json(), a.fingerprint, 30)
    _snapshot_row(lake, b.model_dump_json(), b.fingerprint, 10)  # committed later, stamped earlier
    assert resolve(str(lake), 0).manifest.fingerprint == a.fingerprint
    assert resolve(str(lake), 1).manifest.fingerprint == b.fingerprint
    assert resolve(str(lake)).manifest.fingerprint == b.fingerprint  # the latest is the last commit's
