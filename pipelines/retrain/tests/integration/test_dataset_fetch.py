"""The Workflow's fetch-data step against a real S3 (SeaweedFS `weed mini`): a published dataset directory comes
down verified file by file against its dataset.json, and prep trains from what it wrote; a corrupted, missing or
escaping file, or a directory without dataset.json, is refused with a message naming it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from forkcast_contract.dataset import DATASET_MANIFEST_FILE
from forkcast_devservers.servers import Seaweed
from forkcast_registry.s3 import S3Store
from forkcast_registry.settings import RegistrySettings
from forkcast_registry.testing import s3_client
from forkcast_retrain.dataset_fetch import fetch_dataset, main, parse_s3_uri
from forkcast_retrain.errors import DataError
from forkcast_retrain.prep import run_prep

BUCKET = "forkcast-datasets"
CORRUPTED = "train/train_01.parquet"


@pytest.fixture
def s3(seaweed: Seaweed, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A client of the dataset bucket (emptied) on the session's SeaweedFS (forkcast_devservers' ``seaweed``
    fixture); the step under test reads the same settings from the environment."""
    for name, value in seaweed.client_env(BUCKET).items():
        monkeypatch.setenv(name, value)
    client = s3_client(seaweed)
    if BUCKET not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket=BUCKET)
    for obj in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=obj["Key"])
    return client


def publish(client: Any, data: Path, prefix: str) -> dict[str, bytes]:
    """Upload a generated dataset directory as it is (dataset.json and every file); returns path -> bytes."""
    files = {p.relative_to(data).as_posix(): p.read_bytes() for p in sorted(data.rglob("*")) if p.is_file()}
    for rel, body in files.items():
        client.put_object(Bucket=BUCKET, Key=f"{prefix}{rel}", Body=body)
    return files


def store() -> S3Store:
    return S3Store.from_settings(RegistrySettings().model_copy(update={"bucket": BUCKET}))


def test_a_published_dataset_comes_down_verified_and_prep_reads_it(
    s3: Any, micro_data: Path, tmp_path: Path
) -> None:
    files = publish(s3, micro_data, "datasets/micro/")
    out = tmp_path / "work" / "data"
    lines: list[str] = []
    manifest = fetch_dataset(store(), "datasets/micro/", out, log=lines.append)
    listed = {f.path for f in manifest.files}
    assert listed and listed | {DATASET_MANIFEST_FILE} <= set(files)
    for rel in listed:
        assert (out / rel).read_bytes() == files[rel], rel
    assert json.loads((out / DATASET_MANIFEST_FILE).read_text())["fingerprint"] == manifest.fingerprint
    assert not list(out.rglob("*.partial")), "no partial download left behind"
    assert sum("sha256 verified" in line for line in lines) == len(listed)
    prepared = run_prep(out, tmp_path / "work" / "run")
    assert prepared.info["data_fingerprint"] == manifest.fingerprint


def test_a_corrupted_file_is_refused_by_name_and_the_download_is_not_complete(
    s3: Any, micro_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = publish(s3, micro_data, "datasets/micro/")
    damaged = bytearray(files[CORRUPTED])
    damaged[len(damaged) // 2] ^= 0xFF  # same size, one flipped byte: only the checksum can tell
    s3.put_object(Bucket=BUCKET, Key=f"datasets/micro/{CORRUPTED}", Body=bytes(damaged))
    out = tmp_path / "fetched"  # not tmp_path / "data": micro_data, the published source, lives there
    code = main(["--dataset", f"s3://{BUCKET}/datasets/micro/", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"s3://{BUCKET}/datasets/micro/{CORRUPTED} is corrupted" in err
    recorded = next(f for f in json.loads(files[DATASET_MANIFEST_FILE])["files"] if f["path"] == CORRUPTED)
    assert f"records {recorded['bytes']} bytes with sha256 {recorded['sha256']}" in err
    assert not (out / CORRUPTED).exists() and not (out / f"{CORRUPTED}.partial").exists()
    assert not (out / DATASET_MANIFEST_FILE).exists(), "an unverified download must not look complete"


def test_a_file_listed_but_absent_is_named(s3: Any, micro_data: Path, tmp_path: Path) -> None:
    publish(s3, micro_data, "datasets/micro/")
    s3.delete_object(Bucket=BUCKET, Key=f"datasets/micro/{CORRUPTED}")
    with pytest.raises(DataError, match=f"datasets/micro/{CORRUPTED} is listed in dataset.json but missing"):
        fetch_dataset(store(), "datasets/micro/", tmp_path / "fetched", log=lambda _: None)


def test_a_directory_without_dataset_json_is_not_a_dataset(s3: Any, micro_data: Path, tmp_path: Path) -> None:
    publish(s3, micro_data, "datasets/micro/")
    s3.delete_object(Bucket=BUCKET, Key=f"datasets/micro/{DATASET_MANIFEST_FILE}")
    with pytest.raises(DataError, match=f"s3://{BUCKET}/datasets/micro/ has no dataset.json"):
        fetch_dataset(store(), "datasets/micro/", tmp_path / "fetched", log=lambda _: None)


def test_a_listed_path_outside_the_dataset_is_refused(s3: Any, micro_data: Path, tmp_path: Path) -> None:
    files = publish(s3, micro_data, "datasets/micro/")
    manifest = json.loads(files[DATASET_MANIFEST_FILE])
    manifest["files"][0]["path"] = "../escape.parquet"
    s3.put_object(
        Bucket=BUCKET, Key=f"datasets/micro/{DATASET_MANIFEST_FILE}", Body=json.dumps(manifest).encode()
    )
    out = tmp_path / "work" / "data"
    with pytest.raises(
        DataError, match=re.escape("lists '../escape.parquet': not a path inside the dataset")
    ):
        fetch_dataset(store(), "datasets/micro/", out, log=lambda _: None)
    assert not (tmp_path / "work" / "escape.parquet").exists()


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("/data/datasets/micro", "is not an s3:// URI"),
        ("s3://forkcast-datasets", "names no directory"),
        ("s3:///datasets/micro/", "names no directory"),
    ],
    ids=["node-path", "bucket-only", "no-bucket"],
)
def test_a_dataset_that_is_not_an_s3_directory_uri_is_refused(uri: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        parse_s3_uri(uri)


def test_a_dataset_uri_names_its_bucket_and_directory() -> None:
    assert parse_s3_uri("s3://b-1/datasets/small") == ("b-1", "datasets/small/")
    assert parse_s3_uri("s3://b-1/datasets/small/") == ("b-1", "datasets/small/")
