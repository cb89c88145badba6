"""Read and validate the offline feature tables (SPEC §2) before anything is written to Redis.

Every check names the offending file, column and row, so that a bad dataset is rejected with a message a person
can act on, and nothing reaches Redis (nor the live pointer).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl

from forkcast_contract.dataset import (
    RESTAURANT_COLUMNS,
    RESTAURANT_FEATURES_FILE,
    USER_COLUMNS,
    USER_FEATURES_FILE,
    DatasetManifest,
    read_manifest,
)
from forkcast_contract.features import RESTAURANT_FEATURES, USER_FEATURES

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
FLOAT32_MAX = float(np.finfo(np.float32).max)


class BadInputError(ValueError):
    """The source data breaks the SPEC §2 contract; the message names file, column and row."""


@dataclass(frozen=True)
class UserTable:
    ids: I64
    features: F64  # (n, 30)


@dataclass(frozen=True)
class RestaurantTable:
    ids: I64
    latitude: F64
    longitude: F64
    features: F64  # (n, 10)


@dataclass(frozen=True)
class SourceData:
    manifest: DatasetManifest
    users: UserTable
    restaurants: RestaurantTable


def _read(path: Path, expected: dict[str, str]) -> pl.DataFrame:
    if not path.is_file():
        raise BadInputError(f"{path}: file missing")
    frame = pl.read_parquet(path)
    schema = {name: str(dtype) for name, dtype in frame.schema.items()}
    missing = [c for c in expected if c not in schema]
    if missing:
        raise BadInputError(f"{path.name}: missing column(s) {', '.join(missing)}")
    extra = [c for c in schema if c not in expected]
    if extra:
        raise BadInputError(f"{path.name}: unexpected column(s) {', '.join(extra)}")
    for column, dtype in expected.items():
        if schema[column] != dtype:
            raise BadInputError(f"{path.name}: column {column} has dtype {schema[column]}, expected {dtype}")
    nulls = [c for c in expected if frame[c].null_count()]
    if nulls:
        row = int(frame[nulls[0]].is_null().arg_max() or 0)
        raise BadInputError(f"{path.name}: column {nulls[0]} has null values (first at row {row})")
    return frame


def _check_ids(name: str, column: str, ids: I64, expected_rows: int) -> None:
    if len(ids) != expected_rows:
        raise BadInputError(f"{name}: {len(ids)} rows, dataset.json says {expected_rows}")
    bad = np.flatnonzero((ids < 0) | (ids >= expected_rows))
    if len(bad):
        row = int(bad[0])
        raise BadInputError(
            f"{name}: column {column} row {row}: id {int(ids[row])} out of range 0..{expected_rows - 1}"
        )
    seen = np.bincount(ids, minlength=expected_rows)
    dup = np.flatnonzero(seen > 1)
    if len(dup):
        rows = np.flatnonzero(ids == dup[0])[:2]
        raise BadInputError(
            f"{name}: column {column}: duplicate id {int(dup[0])} at rows {int(rows[0])} and {int(rows[1])}"
        )


def _check_values(name: str, columns: tuple[str, ...], values: F64, low: float, high: float) -> None:
    finite = np.isfinite(values)
    in_range = finite & (values >= low) & (values <= high)
    if in_range.all():
        return
    row, col = (int(i) for i in np.argwhere(~in_range)[0])
    value = float(values[row, col])
    reason = "is not finite" if not finite[row, col] else f"is outside {low:g}..{high:g}"
    raise BadInputError(f"{name}: column {columns[col]} row {row}: value {value!r} {reason}")


def _features(frame: pl.DataFrame, names: tuple[str, ...]) -> F64:
    return frame.select(names).to_numpy(order="c").astype(np.float64, copy=False)


def read_users(data_dir: Path, manifest: DatasetManifest) -> UserTable:
    frame = _read(data_dir / USER_FEATURES_FILE, USER_COLUMNS)
    ids = frame["user_id"].to_numpy()
    _check_ids(USER_FEATURES_FILE, "user_id", ids, manifest.sizes.users)
    features = _features(frame, USER_FEATURES)
    # Values are served as float32: anything beyond its range would become inf online.
    _check_values(USER_FEATURES_FILE, USER_FEATURES, features, -FLOAT32_MAX, FLOAT32_MAX)
    return UserTable(ids=ids, features=features)


def read_restaurants(data_dir: Path, manifest: DatasetManifest) -> RestaurantTable:
    frame = _read(data_dir / RESTAURANT_FEATURES_FILE, RESTAURANT_COLUMNS)
    ids = frame["restaurant_id"].to_numpy()
    _check_ids(RESTAURANT_FEATURES_FILE, "restaurant_id", ids, manifest.sizes.restaurants)
    features = _features(frame, RESTAURANT_FEATURES)
    _check_values(RESTAURANT_FEATURES_FILE, RESTAURANT_FEATURES, features, -FLOAT32_MAX, FLOAT32_MAX)
    coords = _features(frame, ("latitude", "longitude"))
    _check_values(RESTAURANT_FEATURES_FILE, ("latitude",), coords[:, :1], -90.0, 90.0)
    _check_values(RESTAURANT_FEATURES_FILE, ("longitude",), coords[:, 1:], -180.0, 180.0)
    return RestaurantTable(
        ids=ids, latitude=coords[:, 0].copy(), longitude=coords[:, 1].copy(), features=features
    )


def read_source(data_dir: Path) -> SourceData:
    """Both tables, validated; refuses a directory without ``dataset.json`` (an incomplete dataset)."""
    manifest = read_manifest(data_dir)
    return SourceData(
        manifest=manifest,
        users=read_users(data_dir, manifest),
        restaurants=read_restaurants(data_dir, manifest),
    )
