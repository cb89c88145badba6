"""Where a step after prep reads the dataset from: the lake snapshot prep resolved, through this step's own cache.

In CI each step is a job of its own, on the cluster a pod of its own, so the folder prep read a lake dataset into
(its ``data_dir`` in prep.json) is on another machine. prep recorded which snapshot that was (``data_snapshot``:
URI, resolved dataset version, fingerprint), so every later step reads the very same snapshot (by version, its
fingerprint checked) through its own FORKCAST_DATASET_CACHE (forkcast_lake.datasets_read: downloaded once per
cache, reused when complete there): every step reads the data from S3, none from another job's folder, and none
can read rows another publish added meanwhile. Only a local dataset directory (a developer's run) is read where
prep read it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from forkcast_contract.dataset import DATASET_MANIFEST_FILE
from forkcast_contract.registry_format import DatasetSnapshot
from forkcast_lake.datasets_errors import LakeDataError
from forkcast_lake.datasets_read import open_data
from forkcast_registry.errors import RegistryError
from forkcast_retrain.errors import DataError

SNAPSHOT_FIELD = "data_snapshot"  # prep.json's record of the resolved lake snapshot (None for a local folder)


def local_data_dir(info: dict[str, Any]) -> Path:
    """The dataset folder of a ``prep.json`` for this step: the recorded lake snapshot at its resolved version in
    FORKCAST_DATASET_CACHE (fetched from S3 unless this cache holds it), or prep's local dataset directory."""
    record = info.get(SNAPSHOT_FIELD)
    if not record:
        here = Path(info["data_dir"])
        if not (here / DATASET_MANIFEST_FILE).is_file():
            raise DataError(
                f"dataset folder {here} is not on this machine, and prep read no lake snapshot to fetch"
            )
        return here
    recorded = DatasetSnapshot.model_validate(record)
    try:
        source = open_data(recorded.uri, str(recorded.version))
    except (LakeDataError, RegistryError, ValueError) as exc:
        raise DataError(
            f"cannot fetch the snapshot prep read ({recorded.uri} version {recorded.version}): {exc}"
        ) from exc
    fetched = source.record() or {}
    if fetched.get("fingerprint") != recorded.fingerprint:
        raise DataError(
            f"{recorded.uri} version {recorded.version} now holds dataset {fetched.get('fingerprint')}, not the"
            f" {recorded.fingerprint} prep read: refusing to mix two datasets in one run"
        )
    return source.directory
