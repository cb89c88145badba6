"""Where a step after prep reads the dataset from: the folder prep read, or the same snapshot fetched from S3 again.

In CI each step is a job of its own, on the cluster a pod of its own, so the folder prep read the dataset from (its
``data_dir`` in prep.json) is on another machine. prep recorded which lake snapshot that was (``data_snapshot``:
URI, resolved dataset version, fingerprint), so a later step fetches the very same snapshot (by version, its
fingerprint checked) into its own FORKCAST_DATASET_CACHE (forkcast_lake.datasets_read): every step reads the data
from S3, none from another machine's disk, and no step can read rows another publish added meanwhile.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from forkcast_contract.dataset import DATASET_MANIFEST_FILE
from forkcast_contract.registry_format import DatasetSnapshot
from forkcast_lake.datasets import LakeDataError
from forkcast_lake.datasets_read import open_data
from forkcast_registry.errors import RegistryError
from forkcast_retrain.errors import DataError

SNAPSHOT_FIELD = "data_snapshot"  # prep.json's record of the resolved lake snapshot (None for a local folder)


def local_data_dir(info: dict[str, Any]) -> Path:
    """The dataset folder of a ``prep.json`` on this machine: prep's own when it is here (the same job, a local
    run), else the recorded snapshot fetched again from S3 at its resolved version into FORKCAST_DATASET_CACHE."""
    here = Path(info["data_dir"])
    if (here / DATASET_MANIFEST_FILE).is_file():
        return here
    record = info.get(SNAPSHOT_FIELD)
    if not record:
        raise DataError(
            f"dataset folder {here} is not on this machine, and prep read no lake snapshot to fetch"
        )
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
