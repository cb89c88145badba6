"""Which dataset snapshot a run trained on, as the release records it (MLflow params, manifest.json, gate report).

prep resolves ``--data`` (an ``s3://`` lake dataset at ``--data-version``, or a local directory) once and writes
what it resolved into ``prep.json`` (``data_snapshot``: forkcast_lake's ``Snapshot.record()``; absent or null for
a local directory). Every later step reads it back from there, so the gate report, the MLflow run and the
version's manifest name the same URI, version and fingerprint, whatever ``--data-version`` said (a time, or
nothing for the newest) and whatever was published to the lake since.

The later steps read the data itself through the same record (``forkcast_retrain.data_source``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from forkcast_contract.registry_format import DatasetSnapshot
from forkcast_retrain.data_source import SNAPSHOT_FIELD
from forkcast_retrain.errors import DataError
from forkcast_retrain.prep import PREP_DIR, PREP_FILE

LOCAL = "local"  # the version a local directory reports where a text is needed (MLflow params, the report)


def snapshot_of(info: dict[str, Any]) -> DatasetSnapshot:
    """The snapshot in a ``prep.json`` (its ``data_snapshot``, or the directory and fingerprint of a local run)."""
    record = info.get(SNAPSHOT_FIELD)
    if record:
        return DatasetSnapshot.model_validate(record)
    return DatasetSnapshot(uri=str(info["data_dir"]), version=None, fingerprint=str(info["data_fingerprint"]))


def read_snapshot(run_dir: Path) -> DatasetSnapshot:
    """The snapshot ``run_dir`` was prepared from, read from its ``prep.json`` alone (no arrays loaded)."""
    path = run_dir / PREP_DIR / PREP_FILE
    if not path.is_file():
        raise DataError(
            f"{run_dir} has no complete prep ({path} missing): no record of the data it trained on"
        )
    return snapshot_of(json.loads(path.read_text()))


def version_text(snapshot: DatasetSnapshot) -> str:
    return LOCAL if snapshot.version is None else str(snapshot.version)


def mlflow_params(snapshot: DatasetSnapshot) -> dict[str, str]:
    """The run's params naming its data (data_fingerprint is logged with the hyper-parameters already)."""
    return {"data_uri": snapshot.uri, "data_version": version_text(snapshot)}


def describe(snapshot: DatasetSnapshot) -> str:
    """One line for people: ``s3://…/full version 3 (fingerprint 0123456789ab)``."""
    return f"{snapshot.uri} version {version_text(snapshot)} (fingerprint {snapshot.fingerprint[:12]})"
