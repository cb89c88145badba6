"""Reading a dataset snapshot: resolve ``s3://…`` plus a version or timestamp to table versions, then fetch the files.

Readers (``forkcast-retrain prep``, ``forkcast-features load/check``) get a local dataset directory exactly as
``forkcast-data generate`` writes one, so their streaming readers stay as they are: the snapshot's files are
downloaded one at a time in 1 MiB chunks (peak memory independent of file size), each checked against the size
and sha256 that ``dataset.json`` records, into a cache folder per fingerprint; ``dataset.json`` is written last,
so a folder that has it is complete and is reused. A local directory passes through untouched.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, Final

import polars as pl
import pyarrow as pa
from botocore.exceptions import BotoCoreError, ClientError
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from forkcast_contract.dataset import DATASET_MANIFEST_FILE, DatasetManifest, FileEntry
from forkcast_lake.datasets import SNAPSHOTS_TABLE, TABLES, LakeDataError, TableSpec
from forkcast_lake.settings import LakeSettings, get_settings
from forkcast_lake.storage import is_remote, options_for, split_s3_uri, table_uri
from forkcast_registry.s3 import S3Store, is_not_found
from forkcast_registry.settings import RegistrySettings

DATA_VERSION_FLAG: Final = "--data-version"
_CHUNK: Final = 1 << 20


def parse_data_version(text: str | None) -> int | datetime | None:
    """``--data-version``: a dataset version number (``3``) or an ISO-8601 time (``2026-12-05T02:00:00Z``)."""
    if text is None or text == "":
        return None
    if text.isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{DATA_VERSION_FLAG} {text!r} is neither a version number nor an ISO-8601 time"
        ) from None
    if when.tzinfo is None:
        raise ValueError(f"{DATA_VERSION_FLAG} {text!r} has no time zone (add Z or +00:00)")
    return when


def add_data_arguments(
    parser: argparse.ArgumentParser, *, required: bool = True, help: str | None = None
) -> None:
    """``--data`` (a directory or ``s3://…``) and ``--data-version``, spelled alike in every CLI that reads data."""
    parser.add_argument(
        "--data",
        required=required,
        help=help or "dataset: a directory with dataset.json, or s3://bucket/prefix of a lake snapshot",
    )
    parser.add_argument(
        DATA_VERSION_FLAG,
        dest="data_version",
        default=None,
        metavar="N|TIME",
        help="with an s3:// --data: the dataset version (a number) or the newest one at an ISO-8601 time "
        "(default: the latest)",
    )


@dataclass(frozen=True)
class Snapshot:
    """One resolved dataset snapshot: the lake URI, its dataset version and the Delta version of each table."""

    uri: str
    version: int
    manifest: DatasetManifest
    table_versions: dict[str, int]

    def record(self) -> dict[str, Any]:
        """What a consumer writes down (prep.json ``data_snapshot``, a feature version's meta)."""
        return {
            "uri": self.uri,
            "version": self.version,
            "fingerprint": self.manifest.fingerprint,
            "tables": dict(sorted(self.table_versions.items())),
        }


@dataclass(frozen=True)
class LocalData:
    """A dataset directory ready for the readers, and the snapshot it came from (None for a local directory)."""

    directory: Path
    snapshot: Snapshot | None = field(default=None)

    def record(self) -> dict[str, Any] | None:
        return None if self.snapshot is None else self.snapshot.record()


def resolve(
    uri: str, version: int | datetime | None = None, settings: RegistrySettings | None = None
) -> Snapshot:
    """The snapshot ``uri`` held at ``version`` (a dataset version or a time; None = the latest)."""
    snap_uri = table_uri(uri, SNAPSHOTS_TABLE)
    options = options_for(snap_uri, settings)
    try:
        table = DeltaTable(snap_uri, storage_options=options)
    except TableNotFoundError:
        raise LakeDataError(f"{uri}: no dataset published here (no Delta table {SNAPSHOTS_TABLE})") from None
    except OSError as exc:  # delta-rs: the bucket is missing or S3 refused or is unreachable
        raise LakeDataError(f"{uri}: cannot read the Delta table {SNAPSHOTS_TABLE}: {exc}") from exc
    try:
        if version is not None:
            table.load_as_version(version)
    except Exception as exc:  # delta-rs raises a bare DeltaError for a version or time before the table
        latest = DeltaTable(snap_uri, storage_options=options).version()
        raise LakeDataError(f"{uri}: no dataset version {version} (versions 0..{latest}): {exc}") from exc
    rows = pl.from_arrow(table.to_pyarrow_table())
    assert isinstance(rows, pl.DataFrame)
    if rows.is_empty():
        raise LakeDataError(f"{uri}: dataset version {table.version()} holds no snapshot")
    newest = rows.sort("published_at").row(-1, named=True)
    return Snapshot(
        uri=uri,
        version=table.version(),
        manifest=DatasetManifest.model_validate_json(newest["dataset_json"]),
        table_versions={k: int(v) for k, v in json.loads(newest["table_versions"]).items()},
    )


def _table_files(snapshot: Snapshot, spec: TableSpec, settings: RegistrySettings) -> dict[str, str]:
    """File name → path relative to the table, of ``spec``'s table at the snapshot's version."""
    uri = table_uri(snapshot.uri, spec.name)
    options = options_for(uri, settings)
    try:
        table = DeltaTable(uri, version=snapshot.table_versions[spec.name], storage_options=options)
    except TableNotFoundError:
        raise LakeDataError(f"{snapshot.uri}: table {spec.name} is missing (no Delta log at {uri})") from None
    except OSError as exc:
        raise LakeDataError(f"{snapshot.uri}: cannot read table {spec.name} ({uri}): {exc}") from exc
    except KeyError:
        raise LakeDataError(
            f"{snapshot.uri}: snapshot {snapshot.version} names no table {spec.name}"
        ) from None
    paths = pa.table(table.get_add_actions(flatten=True)).column("path").to_pylist()
    return {PurePosixPath(p).name: p for p in paths}


def _download(store: S3Store, key: str, entry: FileEntry, dest: Path, what: str) -> None:
    """Stream one object to ``dest`` via a .partial file; refused unless size and sha256 match ``entry``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    digest, size = hashlib.sha256(), 0
    try:
        body = store.client.get_object(Bucket=store.bucket, Key=key)["Body"]
        with partial.open("wb") as fh:
            for chunk in body.iter_chunks(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                fh.write(chunk)
    except ClientError as exc:
        partial.unlink(missing_ok=True)
        if is_not_found(exc):
            raise LakeDataError(f"{what} is committed in the table but missing from S3 ({key})") from exc
        raise store.translate(exc, f"get {key}") from exc
    except BotoCoreError as exc:
        partial.unlink(missing_ok=True)
        raise store.translate(exc, f"get {key}") from exc
    if size != entry.bytes or digest.hexdigest() != entry.sha256:
        partial.unlink(missing_ok=True)
        raise LakeDataError(
            f"{what} is corrupted: {size} bytes with sha256 {digest.hexdigest()}, but dataset.json records "
            f"{entry.bytes} bytes with sha256 {entry.sha256}"
        )
    partial.replace(dest)


def materialize(snapshot: Snapshot, cache: Path, settings: RegistrySettings | None = None) -> Path:
    """Download the snapshot's files, verified, into ``cache/<fingerprint>/``; reuse a complete folder."""
    manifest = snapshot.manifest
    out = cache / manifest.fingerprint
    if (out / DATASET_MANIFEST_FILE).is_file():
        return out
    bucket, prefix = split_s3_uri(snapshot.uri)
    base = get_settings() if settings is None else settings
    store = S3Store.from_settings(base.model_copy(update={"bucket": bucket}))
    for spec in TABLES:
        files = _table_files(snapshot, spec, base)
        entries = [f for f in manifest.files if spec.holds(f.path)]
        names = {PurePosixPath(e.path).name for e in entries}
        if set(files) != names:
            raise LakeDataError(
                f"{snapshot.uri}: table {spec.name} version {snapshot.table_versions[spec.name]} holds "
                f"{sorted(files)}, dataset.json lists {sorted(names)}"
            )
        for entry in entries:
            rel = PurePosixPath(entry.path)
            if rel.is_absolute() or ".." in rel.parts:
                raise LakeDataError(
                    f"{snapshot.uri}: dataset.json lists {entry.path!r}, not inside the dataset"
                )
            key = f"{prefix}/{spec.name}/{files[rel.name]}".lstrip("/")
            _download(
                store,
                key,
                entry,
                out.joinpath(*rel.parts),
                f"{snapshot.uri} table {spec.name} file {rel.name}",
            )
    (out / DATASET_MANIFEST_FILE).write_bytes(manifest.model_dump_json(indent=2).encode())
    return out


def open_data(
    data: str | Path, data_version: str | int | datetime | None = None, settings: LakeSettings | None = None
) -> LocalData:
    """A local dataset directory for ``--data`` (a directory, or ``s3://…`` at ``--data-version``)."""
    version = parse_data_version(data_version) if isinstance(data_version, str) else data_version
    if not is_remote(data):
        if version is not None:
            raise ValueError(f"{DATA_VERSION_FLAG} applies to an s3:// dataset; {data} is a local directory")
        return LocalData(Path(data))
    s = settings if settings is not None else get_settings()
    snapshot = resolve(str(data), version, s)
    return LocalData(materialize(snapshot, s.dataset_cache, s), snapshot)
