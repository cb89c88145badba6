"""The features each served pair was scored with, and one feature-table row per distinct served state.

What inference read for a request is the live feature version's value of the entity (its ``fv`` names that
version; :mod:`forkcast_lake.pit_snapshots` finds the dataset it was loaded from) unless a live update of that
entity in that version was logged before: then the newest such update's values. "Before" is strict — an update
stamped at or after the prediction's ``ts`` is never used (a polars ``join_asof``, backward, exact matches
excluded), so a later value cannot leak into a row.

An entity served with different values over the window (two feature versions, or an update in between) gets one
row per distinct state in the feature table: a **state id** ``entity_id + k * STATE_STRIDE``, where k = 0, 1, … numbers
the entity's states in (feature version, update order) order; k = 0 keeps the entity's own id. The trainer's
``IdIndex`` takes such sparse ids (binary search), and each click row names the states its pair was served with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import polars as pl

from forkcast_contract.dataset import RESTAURANT_COLUMNS, USER_COLUMNS
from forkcast_contract.features import RESTAURANT_FEATURES, USER_FEATURES
from forkcast_lake.pit_snapshots import FeatureSource
from forkcast_lake.pit_source import UPDATE_ORDER

# 2**40 ≈ 1.1e12 entity ids below the stride, 2**23 states per entity before an int64 overflows.
STATE_STRIDE: Final = 2**40


@dataclass(frozen=True)
class Entity:
    """How one kind of entity appears in the served log, the feature updates and the dataset."""

    name: str  # the feature-update table's ``entity`` value
    id_column: str  # its id column in the dataset tables (and in the served pairs)
    columns: dict[str, str]  # the dataset table's columns (forkcast_contract.dataset)
    features: tuple[str, ...]

    def source_table(self, source: FeatureSource) -> pl.LazyFrame:
        return source.users if self.name == "user" else source.restaurants


USER: Final = Entity("user", "user_id", USER_COLUMNS, USER_FEATURES)
RESTAURANT: Final = Entity("restaurant", "restaurant_id", RESTAURANT_COLUMNS, RESTAURANT_FEATURES)


def served_update(served: pl.LazyFrame, updates: pl.LazyFrame, entity: Entity) -> pl.LazyFrame:
    """``served`` (``entity.id_column``, ``feature_version``, ``ts`` …) with ``UPDATE_ORDER`` of the update whose
    values it was served with (null: the feature version's own values)."""
    mine = (
        updates.filter(pl.col("entity") == entity.name)
        .select(
            pl.col("entity_id").alias(entity.id_column),
            "feature_version",
            pl.col("ts").alias("update_ts"),
            UPDATE_ORDER,
        )
        .sort(
            "update_ts", UPDATE_ORDER
        )  # of updates stamped alike, the asof join takes the last: the later one
    )
    return (
        served.sort("ts")
        .join_asof(
            mine,
            left_on="ts",
            right_on="update_ts",
            by=[entity.id_column, "feature_version"],
            strategy="backward",
            allow_exact_matches=False,
            check_sortedness=False,  # both sides sorted just above
        )
        .drop("update_ts")
    )


def state_ids(states: pl.LazyFrame, entity: Entity) -> pl.LazyFrame:
    """The distinct (entity id, feature version, update order) of ``states`` with their ``state_id``."""
    key = [entity.id_column, "feature_version", UPDATE_ORDER]
    return (
        states.select(key)
        .unique()
        .sort(key, nulls_last=False)
        .with_columns(
            (
                pl.col(entity.id_column)
                + pl.int_range(pl.len(), dtype=pl.Int64).over(entity.id_column) * STATE_STRIDE
            ).alias("state_id")
        )
    )


def state_values(
    ids: pl.LazyFrame, updates: pl.LazyFrame, sources: Mapping[str, FeatureSource], entity: Entity
) -> pl.LazyFrame:
    """The feature-table rows of the states in ``ids``: ``entity.columns``, the id column holding the state id.

    A state whose entity is missing from its version's dataset has no row (the caller counts what it drops).
    """
    columns = list(entity.columns)
    feature_cols = [c for c in columns if c != entity.id_column]
    base_tables = [
        entity.source_table(source).select(columns).with_columns(pl.lit(version).alias("feature_version"))
        for version, source in sorted(sources.items())
    ]
    base = ids.filter(pl.col(UPDATE_ORDER).is_null()).join(
        pl.concat(base_tables), on=[entity.id_column, "feature_version"], how="inner"
    )
    values = [
        pl.col("features").list.get(i).cast(pl.Float64).alias(name) for i, name in enumerate(entity.features)
    ]
    coords = [pl.col("latitude"), pl.col("longitude")] if "latitude" in entity.columns else []
    updated = (
        ids.filter(pl.col(UPDATE_ORDER).is_not_null())
        .join(updates.select(UPDATE_ORDER, "features", "latitude", "longitude"), on=UPDATE_ORDER, how="inner")
        .with_columns(*values, *coords)
    )
    select = [pl.col("state_id").alias(entity.id_column), *(pl.col(c).cast(pl.Float64) for c in feature_cols)]
    return pl.concat([base.select(select), updated.select(select)]).sort(entity.id_column)
