"""A dataset's files and fingerprint checked against its ``dataset.json`` before the lake trusts them.

``dataset.json`` records each file's size and sha256 and one fingerprint over them
(forkcast_contract.dataset.dataset_fingerprint). Readers of a lake snapshot check every file they download against
those records (forkcast_lake.datasets_fetch), which only means something if the records were true when published:
so ``publish`` hashes every file it uploads, and publish, ``resolve`` and the training table's feature sources
recompute the fingerprint from the ``files`` list. A manifest edited by hand, a file rewritten after generation, or a
fingerprint copied from another dataset is refused naming the file or the two fingerprints.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from forkcast_contract.dataset import DatasetManifest, dataset_fingerprint, file_entry
from forkcast_lake.datasets_errors import LakeDataError


def check_fingerprint(manifest: DatasetManifest, where: str) -> None:
    """Refuse a manifest whose fingerprint is not the one its ``files`` list gives."""
    expected = dataset_fingerprint(manifest.files)
    if manifest.fingerprint != expected:
        raise LakeDataError(
            f"{where}: dataset.json's fingerprint {manifest.fingerprint} is not the fingerprint of the files it "
            f"lists ({expected})"
        )


def verify_files(data_dir: Path, manifest: DatasetManifest, paths: Iterable[str] | None = None) -> None:
    """Refuse unless each listed file (``paths``, default all of ``files``) has the size and sha256 dataset.json
    records, naming the first that differs or is missing."""
    wanted = None if paths is None else set(paths)
    for entry in manifest.files:
        if wanted is not None and entry.path not in wanted:
            continue
        path = data_dir / entry.path
        if not path.is_file():
            raise LakeDataError(f"{data_dir}: {entry.path} is listed in dataset.json but missing")
        found = file_entry(data_dir, path, entry.rows)
        if (found.bytes, found.sha256) != (entry.bytes, entry.sha256):
            raise LakeDataError(
                f"{data_dir}: {entry.path} is {found.bytes} bytes with sha256 {found.sha256}, but dataset.json "
                f"records {entry.bytes} bytes with sha256 {entry.sha256}"
            )
