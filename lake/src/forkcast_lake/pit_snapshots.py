"""Which dataset a feature version was loaded from: its users and restaurants tables as they were then.

A feature version's name is ``version_name(dataset fingerprint, feature schema hash)``
(forkcast_contract.feature_store; ``forkcast-features load`` names every version so), so the version a prediction
names (its ``fv``) identifies its source dataset by fingerprint, without asking the feature store (whose versions
are garbage-collected after their grace period). Given the places the features may have come from, each source
is fingerprinted and matched:

* ``s3://bucket/prefix``: a lake dataset (forkcast_lake.datasets); every snapshot ever published there is a row of
  its ``snapshots`` table (append-only), with the Delta version of each table it consists of, so the users and
  restaurants tables are read time-travelled to exactly those versions, whatever was published there since;
* a local dataset directory (``dataset.json``): its two feature files.

Every source's fingerprint is recomputed from its dataset.json's ``files``, and the users and restaurants files of
each feature version the window needs are checked against their recorded size and sha256 before the table is
built (a lake source's are downloaded once for it: forkcast_lake.datasets_fetch.verify_tables).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import polars as pl
from deltalake import DeltaTable

from forkcast_contract.dataset import (
    RESTAURANT_FEATURES_FILE,
    USER_FEATURES_FILE,
    DatasetManifest,
    read_manifest,
)
from forkcast_contract.feature_store import version_name
from forkcast_contract.features import feature_schema_hash
from forkcast_lake.datasets import SNAPSHOTS_TABLE, LakeDataError
from forkcast_lake.datasets_fetch import verify_tables
from forkcast_lake.datasets_verify import check_fingerprint, verify_files
from forkcast_lake.storage import is_remote, options_for, table_uri


@dataclass(frozen=True)
class FeatureSource:
    """The users and restaurants a feature version was loaded from, and where they were read."""

    feature_version: str
    fingerprint: str
    where: str  # ``s3://…`` with the table versions, or the directory: for the report and dataset.json
    users: pl.LazyFrame
    restaurants: pl.LazyFrame
    # Checks the two tables' bytes against dataset.json (run only for the versions a window needs).
    verify: Callable[[], None]


def _lake_sources(uri: str, schema: str) -> list[FeatureSource]:
    snap_uri = table_uri(uri, SNAPSHOTS_TABLE)
    if not DeltaTable.is_deltatable(snap_uri, storage_options=options_for(snap_uri)):
        raise LakeDataError(f"{uri}: no dataset published here (no Delta table {SNAPSHOTS_TABLE})")
    rows = pl.scan_delta(snap_uri, storage_options=options_for(snap_uri)).select(
        "fingerprint", "dataset_json", "table_versions"
    )
    sources = []
    for fingerprint, dataset_json, versions_json in rows.unique(maintain_order=True).collect().iter_rows():
        versions = json.loads(versions_json)
        manifest = DatasetManifest.model_validate_json(dataset_json)
        where = f"{uri} (users@{versions['users']}, restaurants@{versions['restaurants']})"
        check_fingerprint(manifest, where)
        if fingerprint != manifest.fingerprint:
            raise LakeDataError(
                f"{where}: the snapshot row's fingerprint {fingerprint} is not its dataset.json's "
                f"({manifest.fingerprint})"
            )
        users_uri, rests_uri = table_uri(uri, "users"), table_uri(uri, "restaurants")
        sources.append(
            FeatureSource(
                version_name(fingerprint, schema),
                fingerprint,
                where,
                pl.scan_delta(users_uri, version=versions["users"], storage_options=options_for(users_uri)),
                pl.scan_delta(
                    rests_uri, version=versions["restaurants"], storage_options=options_for(rests_uri)
                ),
                partial(verify_tables, uri, manifest, versions, ("users", "restaurants")),
            )
        )
    return sources


def _local_source(directory: Path, schema: str) -> FeatureSource:
    manifest = read_manifest(directory)
    check_fingerprint(manifest, str(directory))
    return FeatureSource(
        version_name(manifest.fingerprint, schema),
        manifest.fingerprint,
        str(directory),
        pl.scan_parquet(directory / USER_FEATURES_FILE),
        pl.scan_parquet(directory / RESTAURANT_FEATURES_FILE),
        partial(verify_files, directory, manifest, (USER_FEATURES_FILE, RESTAURANT_FEATURES_FILE)),
    )


def feature_sources(places: Sequence[str], needed: Sequence[str]) -> dict[str, FeatureSource]:
    """The source of every feature version in ``needed``, found among ``places``; raises naming those not found."""
    schema = feature_schema_hash()
    found: dict[str, FeatureSource] = {}
    for place in places:
        candidates = (
            _lake_sources(place, schema) if is_remote(place) else [_local_source(Path(place), schema)]
        )
        for source in candidates:
            found.setdefault(source.feature_version, source)
    missing = sorted(set(needed) - set(found))
    if missing:
        raise LakeDataError(
            f"feature version(s) {', '.join(missing)} served in the window come from none of the datasets given "
            f"({', '.join(places) or 'none'}): pass the dataset each was loaded from with --features-from"
        )
    for version in needed:
        found[version].verify()  # the bytes the table will be built from, before any is read
    return {version: found[version] for version in needed}
