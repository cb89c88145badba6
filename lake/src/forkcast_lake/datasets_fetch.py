"""Resolve ``s3://…`` plus a dataset version or time to table versions, and fetch the snapshot's files, verified.

The files are downloaded one at a time in 1 MiB chunks (peak memory independent of file size), each checked
against the size and sha256 that ``dataset.json`` records, into ``$FORKCAST_DATASET_CACHE/<fingerprint>/``;
``dataset.json`` is written last, so a folder that has it is complete and is reused. Consumers run this module as
a child process (``python -m forkcast_lake.datasets_fetch URI [--data-version V]``, which prints the folder and
the snapshot as JSON; see forkcast_lake.datasets_read for why).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Final

import pyarrow as pa
from botocore.exceptions import BotoCoreError, ClientError
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from forkcast_contract.dataset import DATASET_MANIFEST_FILE, DatasetManifest, FileEntry
from forkcast_lake.datasets import SNAPSHOTS_TABLE, TABLES, TableSpec, committed_row
from forkcast_lake.datasets_errors import LakeDataError
from forkcast_lake.datasets_read import DATA_VERSION_FLAG, Snapshot, parse_data_version
from forkcast_lake.datasets_verify import check_fingerprint
from forkcast_lake.process_exit import exit_after
from forkcast_lake.settings import get_settings
from forkcast_lake.storage import options_for, split_s3_uri, table_uri
from forkcast_registry.errors import RegistryError
from forkcast_registry.s3 import S3Store, is_not_found
from forkcast_registry.settings import RegistrySettings

_CHUNK: Final = 1 << 20


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
    newest = committed_row(uri, table, options)
    manifest = DatasetManifest.model_validate_json(newest["dataset_json"])
    where = f"{uri} dataset version {table.version()}"
    check_fingerprint(manifest, where)
    if newest["fingerprint"] != manifest.fingerprint:
        raise LakeDataError(
            f"{where}: the snapshot row's fingerprint {newest['fingerprint']} is not its dataset.json's "
            f"({manifest.fingerprint})"
        )
    return Snapshot(
        uri=uri,
        version=table.version(),
        manifest=manifest,
        table_versions={k: int(v) for k, v in json.loads(newest["table_versions"]).items()},
    )


def _table_files(snapshot: Snapshot | _Tables, spec: TableSpec, settings: RegistrySettings) -> dict[str, str]:
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
            f"{snapshot.uri}: the snapshot of dataset {snapshot.manifest.fingerprint[:12]} names no table {spec.name}"
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


@dataclass(frozen=True)
class _Tables:
    """A snapshot row's dataset and table versions, for a reader that has the row but not its dataset version."""

    uri: str
    manifest: DatasetManifest
    table_versions: dict[str, int]


def verify_tables(
    uri: str,
    manifest: DatasetManifest,
    table_versions: dict[str, int],
    names: Sequence[str],
    settings: RegistrySettings | None = None,
) -> None:
    """Download the files of tables ``names`` at ``table_versions`` (a snapshot row's) into a scratch folder, each
    checked against dataset.json's size and sha256 as ``materialize`` checks it, and discard them (for a reader that
    reads the tables with polars directly and wants the bytes it reads verified first; the files never change)."""
    snapshot = _Tables(uri, manifest, table_versions)
    bucket, prefix = split_s3_uri(snapshot.uri)
    base = get_settings() if settings is None else settings
    store = S3Store.from_settings(base.model_copy(update={"bucket": bucket}))
    with tempfile.TemporaryDirectory(prefix="forkcast-verify-") as tmp:
        for spec in (s for s in TABLES if s.name in names):
            files = _table_files(snapshot, spec, base)
            for entry in (e for e in snapshot.manifest.files if spec.holds(e.path)):
                name = PurePosixPath(entry.path).name
                what = f"{snapshot.uri} table {spec.name} file {name}"
                if name not in files:
                    raise LakeDataError(
                        f"{what} is listed in dataset.json but not in table version "
                        f"{snapshot.table_versions[spec.name]}"
                    )
                key = f"{prefix}/{spec.name}/{files[name]}".lstrip("/")
                _download(store, key, entry, Path(tmp) / name, what)
                (Path(tmp) / name).unlink()


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m forkcast_lake.datasets_fetch", description=__doc__)
    parser.add_argument("uri", help="s3://bucket/prefix of a dataset in the lake")
    parser.add_argument(
        DATA_VERSION_FLAG, dest="data_version", default=None, help="version number or ISO time"
    )
    args = parser.parse_args(argv)
    try:
        snapshot = resolve(args.uri, parse_data_version(args.data_version))
        directory = materialize(snapshot, get_settings().dataset_cache)
    except (LakeDataError, RegistryError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"directory": str(directory), "snapshot": snapshot.record()}))
    return 0


if __name__ == "__main__":
    exit_after(main)  # never finalize after delta-rs: see forkcast_lake.process_exit
