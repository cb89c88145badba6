"""Dataset layout of SPEC §2: file names, column order and dtypes, and the geographic box.

The generator writes exactly this; the trainer and the feature loader check their inputs against it, so a
schema drift is caught where the data is read, not as a silently wrong model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from forkcast_contract.features import RESTAURANT_FEATURES, USER_FEATURES

USER_FEATURES_FILE: Final = "user_features.parquet"
RESTAURANT_FEATURES_FILE: Final = "restaurant_features.parquet"
REQUESTS_FILE: Final = "requests.parquet"
DATASET_MANIFEST_FILE: Final = "dataset.json"
TRAIN_DIR: Final = "train"
TEST_DIR: Final = "test"

Split = Literal["train", "test"]
RUN_ORDER_SPLITS: Final[tuple[Split, ...]] = ("train", "test")

# Column name -> dtype name (polars spelling), in file order.
USER_COLUMNS: Final[dict[str, str]] = {"user_id": "Int64", **dict.fromkeys(USER_FEATURES, "Float64")}
RESTAURANT_COLUMNS: Final[dict[str, str]] = {
    "restaurant_id": "Int64",
    "latitude": "Float64",
    "longitude": "Float64",
    **dict.fromkeys(RESTAURANT_FEATURES, "Float64"),
}
CLICK_COLUMNS: Final[dict[str, str]] = {"user_id": "Int64", "restaurant_id": "Int64", "click": "Int64"}
REQUEST_COLUMNS: Final[dict[str, str]] = {
    "user_id": "Int64",
    "latitude": "Float64",
    "longitude": "Float64",
    "candidate_restaurant_ids": "List(Int64)",
    "size": "Int64",
    "max_dist": "Int64",
    "sort_dist": "Boolean",
}


@dataclass(frozen=True)
class GeoBox:
    """Latitude/longitude bounds in degrees (WGS84)."""

    min_lat: float
    max_lat: float
    min_lng: float
    max_lng: float


# The original assignment's box: Bangkok, about 66 x 60 km.
BANGKOK: Final = GeoBox(
    min_lat=13.581327544528989,
    max_lat=14.171447685944495,
    min_lng=100.30471258549801,
    max_lng=100.85824174657563,
)


def click_file_name(split: Split, index: int) -> str:
    """Relative path of one click file, e.g. ``train/train_07.parquet``."""
    return f"{split}/{split}_{index:02d}.parquet"


class FileEntry(BaseModel):
    """One data file as recorded in ``dataset.json``."""

    model_config = ConfigDict(frozen=True)

    path: str
    rows: int = Field(ge=0)
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class DatasetSizes(BaseModel):
    """The sizes a dataset was drawn with (a preset, possibly overridden)."""

    model_config = ConfigDict(frozen=True)

    users: int = Field(gt=0)
    restaurants: int = Field(gt=0)
    train_files: int = Field(ge=0)
    test_files: int = Field(ge=0)
    rows_per_file: int = Field(gt=0)
    requests: int = Field(ge=0)
    candidates: int = Field(gt=0)


class DatasetManifest(BaseModel):
    """``dataset.json``: written last, so its presence marks a complete dataset.

    Consumers (trainer, feature loader) refuse a directory without it: a crashed generator run must never be
    mistaken for data.
    """

    model_config = ConfigDict(frozen=True)

    format_version: Literal[1] = 1
    preset: str
    seed: int
    drift: float = Field(ge=0)
    sizes: DatasetSizes
    files: list[FileEntry]
    fingerprint: str = Field(pattern=r"^[0-9a-f]{64}$")
    click_rate: dict[str, float]
    generator_version: str
    created_at: str

    def rows(self, prefix: str) -> int:
        """Total rows of the files whose path starts with ``prefix`` (e.g. ``train/``)."""
        return sum(f.rows for f in self.files if f.path.startswith(prefix))


def file_entry(root: Path, path: Path, rows: int) -> FileEntry:
    """Describe a written file for ``dataset.json`` (its path below ``root``, size and sha256 of its bytes).

    Here, not in the generator, because every writer of a dataset directory (``forkcast-data generate``, the lake's
    training table) must describe its files alike for the fingerprint to mean one thing.
    """
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return FileEntry(
        path=path.relative_to(root).as_posix(),
        rows=rows,
        bytes=path.stat().st_size,
        sha256=digest.hexdigest(),
    )


def dataset_fingerprint(files: list[FileEntry]) -> str:
    """One hash of the whole dataset's content: changes if any file's bytes change."""
    lines = "".join(f"{f.path}\t{f.sha256}\n" for f in sorted(files, key=lambda f: f.path))
    return hashlib.sha256(lines.encode()).hexdigest()


def read_manifest(data_dir: Path) -> DatasetManifest:
    """Load ``dataset.json`` from a data directory, with a clear error when the dataset is incomplete."""
    path = data_dir / DATASET_MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{data_dir} has no {DATASET_MANIFEST_FILE}: not a complete forkcast dataset "
            f"(run `forkcast-data generate --out {data_dir}`)"
        )
    return DatasetManifest.model_validate_json(path.read_bytes())
