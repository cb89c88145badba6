"""Dataset snapshots in the lake: a generated dataset directory published as Delta tables under one S3 prefix.

Layout under ``s3://bucket/prefix`` (one Delta table each, see lake/README.md):

* ``users``, ``restaurants``, ``train``, ``test``, ``requests`` — the dataset's files (forkcast_contract.dataset),
  committed *as they are*: the Delta data files are the generator's parquet files byte for byte, stored under
  ``<table>/<fingerprint[:16]>/<file name>``, so the sha256s of ``dataset.json`` verify what a reader downloads.
  Each publish is one overwrite commit per table; older versions stay readable (time travel).
* ``snapshots`` — one row per published dataset (fingerprint, the whole ``dataset.json``, the Delta version of each
  table it consists of). The **dataset version** is this table's Delta version, so ``--data-version N`` (or a
  timestamp) is Delta time travel on it, and the row it shows last names the table versions to read.

Publishing the same dataset again adds no version (the latest snapshot already has that fingerprint); a publish
that crashed between tables is finished by rerunning it (a table already at this dataset's files is not committed
again). Every table is created with the contract's schema, and a file whose columns differ is refused naming the
column before anything is committed; so is a file whose size or sha256 is not dataset.json's, or a fingerprint that
is not the files' (forkcast_lake.datasets_verify).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Final

import polars as pl
import pyarrow as pa
from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import BotoCoreError, ClientError
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.transaction import AddAction, RemoveAction

from forkcast_contract.dataset import (
    CLICK_COLUMNS,
    REQUEST_COLUMNS,
    REQUESTS_FILE,
    RESTAURANT_COLUMNS,
    RESTAURANT_FEATURES_FILE,
    TEST_DIR,
    TRAIN_DIR,
    USER_COLUMNS,
    USER_FEATURES_FILE,
    DatasetManifest,
    FileEntry,
    read_manifest,
)
from forkcast_lake.datasets_errors import LakeDataError, SchemaMismatchError
from forkcast_lake.datasets_verify import check_fingerprint, verify_files
from forkcast_lake.settings import get_settings
from forkcast_lake.storage import options_for, split_s3_uri, table_uri
from forkcast_registry.s3 import S3Store
from forkcast_registry.settings import RegistrySettings

__all__ = ["LakeDataError", "PublishResult", "SchemaMismatchError", "publish"]

log = logging.getLogger(__name__)

SNAPSHOTS_TABLE: Final = "snapshots"
# Commit metadata key carrying the dataset fingerprint on every table commit a publish makes.
FINGERPRINT_KEY: Final = "forkcast.dataset_fingerprint"


@dataclass(frozen=True)
class TableSpec:
    """One dataset table: which files of ``dataset.json`` it holds and the columns they must have."""

    name: str
    columns: dict[str, str]

    def holds(self, path: str) -> bool:
        if self.name == "users":
            return path == USER_FEATURES_FILE
        if self.name == "restaurants":
            return path == RESTAURANT_FEATURES_FILE
        if self.name == "requests":
            return path == REQUESTS_FILE
        folder = TRAIN_DIR if self.name == "train" else TEST_DIR
        return path.startswith(f"{folder}/")


TABLES: Final[tuple[TableSpec, ...]] = (
    TableSpec("users", USER_COLUMNS),
    TableSpec("restaurants", RESTAURANT_COLUMNS),
    TableSpec("train", CLICK_COLUMNS),
    TableSpec("test", CLICK_COLUMNS),
    TableSpec("requests", REQUEST_COLUMNS),
)

_ARROW_TYPES: Final[dict[str, pa.DataType]] = {
    "Int64": pa.int64(),
    "Float64": pa.float64(),
    "Boolean": pa.bool_(),
    "List(Int64)": pa.list_(pa.int64()),
}
SNAPSHOT_SCHEMA: Final = pa.schema(
    [
        ("fingerprint", pa.string()),
        ("dataset_json", pa.string()),
        ("table_versions", pa.string()),
        ("published_at", pa.string()),
    ]
)


def arrow_schema(columns: dict[str, str]) -> pa.Schema:
    """The Arrow schema of a contract column map (polars dtype spelling → Arrow type)."""
    return pa.schema([(name, _ARROW_TYPES[dtype]) for name, dtype in columns.items()])


def check_file_schema(path: Path, spec: TableSpec) -> None:
    """Refuse ``path`` unless its columns are exactly the contract's, in order, naming the first that differs."""
    found = {name: str(dtype) for name, dtype in pl.read_parquet_schema(path).items()}
    for name, dtype in spec.columns.items():
        if name not in found:
            raise SchemaMismatchError(f"table {spec.name}: {path.name} has no column {name!r} ({dtype})")
        if found[name] != dtype:
            raise SchemaMismatchError(
                f"table {spec.name}: column {name!r} of {path.name} is {found[name]}, the contract says {dtype}"
            )
    extra = [name for name in found if name not in spec.columns]
    if extra:
        raise SchemaMismatchError(f"table {spec.name}: {path.name} has columns the contract lacks: {extra}")
    if list(found) != list(spec.columns):
        raise SchemaMismatchError(
            f"table {spec.name}: {path.name} has the contract's columns in another order"
        )


@dataclass(frozen=True)
class PublishResult:
    """What a publish did: the dataset version readers ask for, and whether this call added it."""

    uri: str
    version: int
    fingerprint: str
    created: bool
    table_versions: dict[str, int]


def _data_key(prefix: str, spec: TableSpec, fingerprint: str, entry: FileEntry) -> str:
    """Where one dataset file lives in S3: below its table, in a folder per dataset (never overwritten)."""
    return f"{prefix}/{spec.name}/{fingerprint[:16]}/{PurePosixPath(entry.path).name}".lstrip("/")


def _open_or_create(uri: str, schema: pa.Schema, options: dict[str, str] | None) -> DeltaTable:
    if DeltaTable.is_deltatable(uri, storage_options=options):
        return DeltaTable(uri, storage_options=options)
    return DeltaTable.create(uri, schema=schema, mode="ignore", storage_options=options)


def _commit_table(
    uri: str,
    spec: TableSpec,
    manifest: DatasetManifest,
    entries: list[FileEntry],
    rel_paths: list[str],
    options: dict[str, str] | None,
) -> int:
    """Make ``entries`` (uploaded at ``rel_paths``, relative to the table) the table's current files."""
    schema = arrow_schema(spec.columns)
    table = _open_or_create(uri, schema, options)
    current = {action["path"] for action in _add_actions(table)}
    if current == set(rel_paths):  # a rerun after a crash between tables: this one is already committed
        log.info(
            "table %s already holds dataset %s at version %d",
            spec.name,
            manifest.fingerprint[:12],
            table.version(),
        )
        return table.version()
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    actions: list[AddAction | RemoveAction] = [
        AddAction(
            path=rel,
            size=entry.bytes,
            partition_values={},
            modification_time=now_ms,
            data_change=True,
            stats=json.dumps({"numRecords": entry.rows}),
        )
        for rel, entry in zip(rel_paths, entries, strict=True)
    ]
    table.create_write_transaction(
        actions,
        mode="overwrite",
        schema=schema,
        commit_properties=CommitProperties(
            custom_metadata={FINGERPRINT_KEY: manifest.fingerprint, "forkcast.operation": "publish"}
        ),
    )
    table.update_incremental()
    return table.version()


def _add_actions(table: DeltaTable) -> Iterator[dict[str, object]]:
    batch = pa.table(table.get_add_actions(flatten=True))
    yield from batch.select(["path", "size_bytes"]).to_pylist()


def _rows(table: DeltaTable) -> pl.DataFrame:
    rows = pl.from_arrow(table.to_pyarrow_table())
    assert isinstance(rows, pl.DataFrame)
    return rows


def committed_row(uri: str, table: DeltaTable, options: dict[str, str] | None) -> dict[str, str]:
    """The snapshot row that the commit of ``table``'s loaded version appended: the rows at that version less the
    rows at the one before. Not the newest ``published_at``, which is the publisher's clock: a publisher whose clock
    is behind would make version N resolve to an older row. The table is append-only (one row per commit) and tiny
    (one row per publish), so reading both versions whole costs less than parsing the commit's log entry."""
    version = table.version()
    rows = _rows(table)
    if version > 0:
        before = _rows(DeltaTable(table.table_uri, version=version - 1, storage_options=options))
        rows = rows.join(before, on=rows.columns, how="anti", nulls_equal=True)
    if rows.height != 1:
        raise LakeDataError(
            f"{uri}: dataset version {version} appended {rows.height} snapshot rows, not one (the {SNAPSHOTS_TABLE} "
            "table is written only by publish, one row per commit)"
        )
    return {k: str(v) for k, v in rows.row(0, named=True).items()}


def latest_snapshot(uri: str, settings: RegistrySettings | None = None) -> tuple[int, dict[str, str]] | None:
    """(dataset version, row) of the newest snapshot under ``uri``; None when nothing was published there."""
    snap_uri = table_uri(uri, SNAPSHOTS_TABLE)
    options = options_for(snap_uri, settings)
    if not DeltaTable.is_deltatable(snap_uri, storage_options=options):
        return None
    table = DeltaTable(snap_uri, storage_options=options)
    if _rows(table).is_empty():
        return None
    return table.version(), committed_row(uri, table, options)


def publish(data_dir: Path, uri: str, settings: RegistrySettings | None = None) -> PublishResult:
    """Publish the complete dataset in ``data_dir`` as a new snapshot under ``uri`` (``s3://bucket/prefix``).

    Files are uploaded first (to keys no other dataset uses), then each table gets one overwrite commit, then
    the snapshot row is appended: a reader sees the new version only once all of it is committed. Before anything
    is uploaded, the fingerprint and then every file's size and sha256 are checked against ``dataset.json``.
    """
    manifest = read_manifest(data_dir)
    check_fingerprint(manifest, str(data_dir))
    plan: list[tuple[TableSpec, list[FileEntry]]] = []
    for spec in TABLES:
        entries = sorted((f for f in manifest.files if spec.holds(f.path)), key=lambda f: f.path)
        for entry in entries:
            check_file_schema(data_dir / entry.path, spec)
        plan.append((spec, entries))
    # After the schema check (its message names the column), before S3 is asked anything.
    verify_files(data_dir, manifest)
    bucket, prefix = split_s3_uri(uri)
    base = get_settings() if settings is None else settings
    store = S3Store.from_settings(base.model_copy(update={"bucket": bucket}))
    store.ensure_bucket(create=True)
    latest = latest_snapshot(uri, base)
    options = options_for(uri, base)
    if latest is not None and latest[1]["fingerprint"] == manifest.fingerprint:
        version, row = latest
        return PublishResult(uri, version, manifest.fingerprint, False, json.loads(row["table_versions"]))
    table_versions: dict[str, int] = {}
    for spec, entries in plan:
        keys = [_data_key(prefix, spec, manifest.fingerprint, e) for e in entries]
        for entry, key in zip(entries, keys, strict=True):
            # boto3's managed upload streams the file in parts: memory stays bounded whatever its size.
            try:
                store.client.upload_file(str(data_dir / entry.path), bucket, key)
            except (ClientError, BotoCoreError, S3UploadFailedError) as exc:
                raise store.translate(exc, f"upload {entry.path}") from exc
        table_prefix = f"{prefix}/{spec.name}/".lstrip("/")
        rel_paths = [key.removeprefix(table_prefix) for key in keys]
        table_versions[spec.name] = _commit_table(
            table_uri(uri, spec.name), spec, manifest, entries, rel_paths, options
        )
    row = pa.table(
        {
            "fingerprint": [manifest.fingerprint],
            "dataset_json": [manifest.model_dump_json()],
            "table_versions": [json.dumps(table_versions, sort_keys=True)],
            "published_at": [datetime.now(UTC).isoformat()],
        },
        schema=SNAPSHOT_SCHEMA,
    )
    snap_uri = table_uri(uri, SNAPSHOTS_TABLE)
    write_deltalake(
        snap_uri,
        row,
        mode="append",
        storage_options=options,
        commit_properties=CommitProperties(custom_metadata={FINGERPRINT_KEY: manifest.fingerprint}),
    )
    # Our commit's version, found by its fingerprint: another publisher may have appended after it already.
    history = DeltaTable(snap_uri, storage_options=options).history(20)
    version = next(int(c["version"]) for c in history if c.get(FINGERPRINT_KEY) == manifest.fingerprint)
    return PublishResult(uri, version, manifest.fingerprint, True, table_versions)
