"""Reading a dataset for a consumer: ``--data`` (a directory or ``s3://…``) and ``--data-version`` → a local folder.

Readers (``forkcast-retrain prep``, ``forkcast-features load/check``) get a local dataset directory exactly as
``forkcast-data generate`` writes one, so their streaming readers stay as they are. For ``s3://…`` the snapshot
is resolved and its files downloaded and verified by :mod:`forkcast_lake.datasets_fetch` **in a child process**:
delta-rs, pyarrow and boto3 plus delta-rs's runtime cost a consumer about 110 MiB of peak RSS whatever the dataset
size (measured with lake/benchmarks/bench_snapshot_read.py, 2026-12-05: prep +105 MiB on tiny, +110 MiB on small,
in-process), which the child returns to the system before the consumer starts reading. So the consumer's peak
memory is today's. This module imports none of them. A local directory passes through untouched.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from forkcast_contract.dataset import DatasetManifest, read_manifest
from forkcast_lake.datasets_errors import LakeDataError
from forkcast_lake.storage import is_remote

__all__ = ["DATA_VERSION_FLAG", "LakeDataError", "LocalData", "Snapshot", "add_data_arguments", "open_data"]

DATA_VERSION_FLAG: Final = "--data-version"


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


def open_data(data: str | Path, data_version: str | int | datetime | None = None) -> LocalData:
    """A local dataset directory for ``--data`` (a directory, or ``s3://…`` at ``--data-version``).

    The S3 settings and the cache folder come from the environment (forkcast_lake.settings.LakeSettings), which
    the fetching child inherits.
    """
    version = parse_data_version(data_version) if isinstance(data_version, str) else data_version
    if not is_remote(data):
        if version is not None:
            raise ValueError(f"{DATA_VERSION_FLAG} applies to an s3:// dataset; {data} is a local directory")
        return LocalData(Path(data))
    argv = [sys.executable, "-m", "forkcast_lake.datasets_fetch", str(data)]
    if version is not None:
        argv += [DATA_VERSION_FLAG, str(version) if isinstance(version, int) else version.isoformat()]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        said = lines[-1].removeprefix("error: ") if lines else f"fetching {data} failed"
        if done.returncode < 0:  # a signal: say which, so a crash never reads like a refusal of the data
            said = f"the fetching process died of {signal.Signals(-done.returncode).name} ({said})"
        raise LakeDataError(said)
    fetched = json.loads(done.stdout)
    directory = Path(fetched["directory"])
    record = fetched["snapshot"]
    return LocalData(
        directory,
        Snapshot(
            uri=record["uri"],
            version=int(record["version"]),
            manifest=read_manifest(directory),
            table_versions={k: int(v) for k, v in record["tables"].items()},
        ),
    )
