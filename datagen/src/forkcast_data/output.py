"""The output directory's life cycle: refuse to mix runs, resume our own, write every file atomically.

States of an output directory, told apart by two small files:
  * ``dataset.json`` present: a complete dataset (written last).
  * ``.forkcast-generate.json`` present: a run in progress or interrupted, with the parameters it was started
    with. A rerun with the same parameters resumes it (every file is drawn from its own seeded stream, so the
    result is the same as an uninterrupted run); other parameters are refused.
  * data files but neither marker: an interrupted run of another tool or a hand-made copy; refused.
Each file is written under a temporary name and renamed, so a file with its final name is always complete.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

from forkcast_contract.dataset import (
    DATASET_MANIFEST_FILE,
    REQUESTS_FILE,
    RESTAURANT_FEATURES_FILE,
    TEST_DIR,
    TRAIN_DIR,
    USER_FEATURES_FILE,
    DatasetManifest,
    FileEntry,
    dataset_fingerprint,
)
from forkcast_contract.dataset import file_entry as contract_file_entry

RUN_MARKER_FILE = ".forkcast-generate.json"
_TMP_SUFFIX = ".forkcast-tmp"
_CLICK_FILE = re.compile(r"^(train|test)_\d{2,}\.parquet$")


class GenerateError(Exception):
    """A failure with a one-line, user-facing explanation."""


def _data_files(out: Path) -> list[Path]:
    """Every file of ours in ``out`` (data, markers, leftovers), nothing else."""
    found = [out / n for n in (USER_FEATURES_FILE, RESTAURANT_FEATURES_FILE, REQUESTS_FILE)]
    for sub in (TRAIN_DIR, TEST_DIR):
        if (out / sub).is_dir():
            found += [p for p in (out / sub).iterdir() if _CLICK_FILE.match(p.name)]
            found += [p for p in (out / sub).iterdir() if p.name.endswith(_TMP_SUFFIX)]
    found += [p for p in out.iterdir() if p.name.endswith(_TMP_SUFFIX)] if out.is_dir() else []
    return [p for p in found if p.is_file()]


def remove_dataset(out: Path) -> None:
    """Delete exactly the files a generator run writes (``--force``), and the split folders if left empty."""
    for path in [*_data_files(out), out / DATASET_MANIFEST_FILE, out / RUN_MARKER_FILE]:
        path.unlink(missing_ok=True)
    for sub in (TRAIN_DIR, TEST_DIR):
        with contextlib.suppress(FileNotFoundError, OSError):
            (out / sub).rmdir()


def prepare(out: Path, params: dict[str, object], *, force: bool) -> str:
    """Make ``out`` ready for a run with ``params``; returns "fresh", "resume" or "complete"."""
    if out.exists() and not out.is_dir():
        raise GenerateError(f"output path {out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-probe{_TMP_SUFFIX}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise GenerateError(f"cannot write to output directory {out}: {exc.strerror or exc}") from exc

    manifest_path, marker_path = out / DATASET_MANIFEST_FILE, out / RUN_MARKER_FILE
    if force:
        remove_dataset(out)
    elif manifest_path.exists():
        existing = DatasetManifest.model_validate_json(manifest_path.read_bytes())
        if _manifest_params(existing) == params and all((out / f.path).is_file() for f in existing.files):
            return "complete"
        raise GenerateError(
            f"{out} already holds a different dataset (preset={existing.preset}, seed={existing.seed}, "
            f"drift={existing.drift}); use --force to replace it or choose another --out"
        )
    elif marker_path.exists():
        started = json.loads(marker_path.read_text())
        if started != params:
            raise GenerateError(
                f"{out} holds an interrupted run with other parameters ({_describe(started)}); rerun with "
                "those to resume it, or use --force to discard it"
            )
        return "resume"
    elif _data_files(out):
        raise GenerateError(
            f"{out} has data files but no {DATASET_MANIFEST_FILE}: an incomplete or foreign dataset; "
            "use --force to replace it"
        )
    atomic_write_bytes(marker_path, json.dumps(params, sort_keys=True).encode())
    return "fresh"


def _manifest_params(manifest: DatasetManifest) -> dict[str, object]:
    return run_params(manifest.preset, manifest.seed, manifest.drift, manifest.sizes.model_dump())


def run_params(preset: str, seed: int, drift: float, sizes: dict[str, int]) -> dict[str, object]:
    """The parameters that decide a dataset's content (what a resume must agree on)."""
    return {"preset": preset, "seed": seed, "drift": drift, "sizes": sizes}


def _describe(params: dict[str, object]) -> str:
    return ", ".join(f"{k}={params.get(k)}" for k in ("preset", "seed", "drift"))


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}{_TMP_SUFFIX}")
    try:
        yield tmp
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise GenerateError(
                f"disk full while writing {path}; free some space and rerun to resume"
            ) from exc
        raise GenerateError(f"cannot write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def file_entry(out: Path, path: Path, rows: int) -> FileEntry:
    """Describe a written file for ``dataset.json`` (the contract's rule, shared with the lake's training table)."""
    return contract_file_entry(out, path, rows)


def fingerprint(files: list[FileEntry]) -> str:
    """One hash of the whole dataset's content (the contract's ``dataset_fingerprint``)."""
    return dataset_fingerprint(files)
