"""``forkcast-lake training-table``: the traffic the platform served, as a dataset the trainer reads.

Each served (request, restaurant) pair whose prediction is stamped in [since, until) becomes one click row:

* its label is the online-AUC job's (:mod:`forkcast_lake.pit_labels`): the first feedback of the request's own API
  key within the attribution window (forkcast_contract.streams.ATTRIBUTION_WINDOW_S); a pair without one — no
  feedback, only a late click, only another key's — is a negative; repeated feedback counts once;
* its user and restaurant are the feature states it was scored with (:mod:`forkcast_lake.pit_features`): the
  prediction's feature version, read from the dataset it was loaded from at that dataset's Delta version, plus any
  live update logged before the prediction — never a later value. An entity served in several states has one
  feature-table row per state (sparse state ids; k = 0 keeps the entity's id), and every click row names its states.

The output is a dataset directory as ``forkcast-data generate`` writes one (SPEC §2 layout; ``dataset.json`` last,
with sha256s and the fingerprint; ``preset`` ``served-log``), or with ``--out s3://…`` that directory published as a
lake snapshot (forkcast_lake.datasets.publish). ``forkcast-retrain all --data <out>`` trains on it. It has no
requests table (the served log does not keep the requests' locations or candidates), and its ids are state ids, so
it is for training, not for ``forkcast-features load``. Rows are split into train and test by a hash of the request
id (all pairs of a request on one side), so the split, and every byte of the parquet files, is a function of the
inputs: the same window over the same tables gives the same fingerprint.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Final

import polars as pl

from forkcast_contract.dataset import (
    DATASET_MANIFEST_FILE,
    RESTAURANT_FEATURES_FILE,
    USER_FEATURES_FILE,
    DatasetManifest,
    DatasetSizes,
    FileEntry,
    Split,
    click_file_name,
    dataset_fingerprint,
    file_entry,
)
from forkcast_contract.streams import ATTRIBUTION_WINDOW_S
from forkcast_lake.datasets import LakeDataError, publish
from forkcast_lake.pit_complete import IncompleteWindowError, check_labels_complete, check_retained
from forkcast_lake.pit_features import RESTAURANT, USER, Entity, served_update, state_ids, state_values
from forkcast_lake.pit_labels import labelled_pairs
from forkcast_lake.pit_snapshots import FeatureSource, feature_sources
from forkcast_lake.pit_source import UPDATE_ORDER, ServedLog, parse_time
from forkcast_lake.retention import RetentionSettings
from forkcast_lake.settings import get_settings
from forkcast_lake.storage import is_remote

log = logging.getLogger(__name__)

PRESET: Final = "served-log"
DEFAULT_TEST_FRACTION: Final = 0.2  # the tiny/small presets' test share (50 k of 250 k rows)
DEFAULT_ROWS_PER_FILE: Final = 1_000_000


@dataclass(frozen=True)
class TrainingTable:
    """The four tables of the dataset and what the report says about them."""

    users: pl.DataFrame
    restaurants: pl.DataFrame
    clicks: dict[Split, pl.DataFrame]
    requests: int
    pairs: int  # served pairs in the window
    dropped: (
        int  # pairs whose user or restaurant is in none of the state tables (not in its version's dataset)
    )
    max_served: int  # most restaurants one response held
    sources: tuple[str, ...]  # where each feature version's values were read


def _split_of(rids: pl.Series, test_fraction: float) -> pl.DataFrame:
    """``rid`` → ``test`` (bool): the first 8 bytes of blake2b(rid) below ``test_fraction`` of 2**64.

    A cryptographic hash rather than polars' ``hash``, whose values may change between polars releases (it says
    so): the split must not move under an upgrade. One hashlib call per request (≈ 0.5 µs each here), not per row.
    """
    limit = int(test_fraction * 2**64)
    digests = [int.from_bytes(hashlib.blake2b(r.encode(), digest_size=8).digest(), "big") for r in rids]
    return pl.DataFrame({"rid": rids, "test": [d < limit for d in digests]})


def _states(
    served: pl.LazyFrame, updates: pl.LazyFrame, sources: dict[str, FeatureSource], entity: Entity
) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """(served with ``<entity>_state`` per row, the state feature table)."""
    with_update = served_update(served, updates, entity)
    ids = state_ids(with_update, entity).collect().lazy()
    values = state_values(ids, updates, sources, entity)
    key = [entity.id_column, "feature_version", UPDATE_ORDER]
    stated = with_update.join(
        ids.select(*key, pl.col("state_id").alias(f"{entity.name}_state")),
        on=key,
        how="left",
        nulls_equal=True,
    )
    return stated.drop(UPDATE_ORDER), values


def build(
    served_log: ServedLog,
    since: float,
    until: float,
    features_from: Sequence[str],
    *,
    attribution_s: float = ATTRIBUTION_WINDOW_S,
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> TrainingTable:
    """The training table of the pairs served in [since, until) (see the module docstring)."""
    pairs = (
        labelled_pairs(
            served_log.predictions(since, until),
            served_log.feedback(since, until, attribution_s),
            attribution_s,
        )
        .select(
            "rid",
            "ts",
            "user_id",
            "restaurant_id",
            "feature_version",
            pl.col("clicked").fill_null(False).cast(pl.Int64).alias("click"),
        )
        .collect()
    )
    if pairs.is_empty():
        raise LakeDataError(f"no prediction was served in [{since}, {until}): nothing to train on")
    versions = sorted(pairs["feature_version"].unique())
    sources = feature_sources(features_from, versions)
    updates = (
        served_log.feature_updates(until).filter(pl.col("feature_version").is_in(versions)).collect().lazy()
    )
    served = pairs.lazy()
    served, users = _states(served, updates, sources, USER)
    served, restaurants = _states(served, updates, sources, RESTAURANT)
    users_df, rests_df = users.collect(), restaurants.collect()
    rows = (
        served.join(
            users_df.lazy().select(pl.col("user_id").alias("user_state")), on="user_state", how="semi"
        )
        .join(
            rests_df.lazy().select(pl.col("restaurant_id").alias("restaurant_state")),
            on="restaurant_state",
            how="semi",
        )
        .collect()
    )
    split = _split_of(rows["rid"].unique().sort(), test_fraction)
    rows = rows.join(split, on="rid", how="left").sort("ts", "rid", "restaurant_id")
    columns = (
        pl.col("user_state").alias("user_id"),
        pl.col("restaurant_state").alias("restaurant_id"),
        "click",
    )
    clicks: dict[Split, pl.DataFrame] = {
        "train": rows.filter(~pl.col("test")).select(columns),
        "test": rows.filter(pl.col("test")).select(columns),
    }
    # Only the states some kept row uses (a state of a dropped pair would be a row nobody trains on).
    users_df = users_df.join(
        rows.select(pl.col("user_state").alias("user_id")).unique(), on="user_id", how="semi"
    )
    rests_df = rests_df.join(
        rows.select(pl.col("restaurant_state").alias("restaurant_id")).unique(),
        on="restaurant_id",
        how="semi",
    )
    per_request = pairs.group_by("rid").len()["len"]
    return TrainingTable(
        users=users_df.sort("user_id"),
        restaurants=rests_df.sort("restaurant_id"),
        clicks=clicks,
        requests=pairs["rid"].n_unique(),
        pairs=pairs.height,
        dropped=pairs.height - rows.height,
        max_served=int(per_request.max() or 0),  # type: ignore[arg-type]
        sources=tuple(sources[v].where for v in versions),
    )


def _write(frame: pl.DataFrame, root: Path, name: str) -> FileEntry:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(path)
    return file_entry(root, path, frame.height)


def write_dataset(
    table: TrainingTable, out: Path, rows_per_file: int = DEFAULT_ROWS_PER_FILE
) -> DatasetManifest:
    """Write ``table`` into the empty or new directory ``out`` (SPEC §2 layout), ``dataset.json`` last."""
    if out.exists() and any(out.iterdir()):
        raise LakeDataError(f"{out} is not empty: the training table goes into a new directory")
    for split, frame in table.clicks.items():
        if frame.is_empty():
            raise LakeDataError(
                f"the {split} split is empty ({table.requests} requests in the window): widen the window"
            )
    files = [
        _write(table.users, out, USER_FEATURES_FILE),
        _write(table.restaurants, out, RESTAURANT_FEATURES_FILE),
    ]
    counts: dict[str, int] = {}
    for split, frame in table.clicks.items():
        chunks = range(0, frame.height, rows_per_file)
        counts[split] = len(chunks)
        files += [
            _write(frame.slice(start, rows_per_file), out, click_file_name(split, i))
            for i, start in enumerate(chunks)
        ]
    manifest = DatasetManifest(
        preset=PRESET,
        seed=0,
        drift=0.0,
        sizes=DatasetSizes(
            users=table.users.height,
            restaurants=table.restaurants.height,
            train_files=counts["train"],
            test_files=counts["test"],
            rows_per_file=rows_per_file,
            requests=0,
            candidates=max(table.max_served, 1),
        ),
        files=files,
        fingerprint=dataset_fingerprint(files),
        click_rate={split: float(frame["click"].mean() or 0.0) for split, frame in table.clicks.items()},  # type: ignore[arg-type]
        generator_version=f"forkcast-lake {package_version('forkcast-lake')}",
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    (out / DATASET_MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2))
    return manifest


@dataclass(frozen=True)
class Written:
    """Where the training table went and what it holds (the CLI prints it)."""

    out: str
    fingerprint: str
    dataset_version: int | None  # the lake dataset version for an s3:// output
    table: TrainingTable


def training_table(
    lake: str,
    since: float,
    until: float,
    out: str,
    features_from: Sequence[str],
    *,
    attribution_s: float = ATTRIBUTION_WINDOW_S,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    rows_per_file: int = DEFAULT_ROWS_PER_FILE,
    allow_incomplete: bool = False,
    keep_days: int | None = None,
    now: datetime | None = None,
) -> Written:
    """Build the training table of [since, until) from the served log under ``lake`` and write it to ``out``
    (a new local directory, or ``s3://bucket/prefix``: published there as a dataset snapshot).

    Refused (forkcast_lake.pit_complete) when ``since`` is before the retention cutoff of ``keep_days``
    (FORKCAST_LAKE_KEEP_DAYS when None), and, unless ``allow_incomplete``, when the feedback table is not yet
    committed up to ``until + attribution_s + MAX_CLOCK_SKEW_S`` (clicks still on their way would be negatives).
    """
    check_retained(since, RetentionSettings().keep_days if keep_days is None else keep_days, now)
    if not allow_incomplete:
        check_labels_complete(lake, until, attribution_s)
    table = build(
        ServedLog(lake), since, until, features_from, attribution_s=attribution_s, test_fraction=test_fraction
    )
    if not is_remote(out):
        manifest = write_dataset(table, Path(out), rows_per_file)
        return Written(out, manifest.fingerprint, None, table)
    with tempfile.TemporaryDirectory(prefix="forkcast-training-table-") as tmp:
        manifest = write_dataset(table, Path(tmp) / "data", rows_per_file)
        result = publish(Path(tmp) / "data", out)
    return Written(out, manifest.fingerprint, result.version, table)


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not strictly between 0 and 1: both splits need rows")
    return value


def _run(args: argparse.Namespace) -> int:
    if args.until <= args.since:
        raise SystemExit(f"--until ({args.until}) must be after --since ({args.since})")
    try:
        written = training_table(
            args.lake or get_settings().lake_uri,
            args.since,
            args.until,
            args.out,
            args.features_from,
            attribution_s=args.attribution_s,
            test_fraction=args.test_fraction,
            rows_per_file=args.rows_per_file,
            allow_incomplete=args.allow_incomplete,
        )
    except IncompleteWindowError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    t = written.table
    train, test = t.clicks["train"], t.clicks["test"]
    print(
        f"{written.out}: {t.requests:,} requests, {t.pairs:,} served pairs ({t.dropped:,} dropped: entity not in "
        f"its feature version's dataset); train {train.height:,} rows, test {test.height:,}; "
        f"{t.users.height:,} user states, {t.restaurants.height:,} restaurant states; click rate "
        f"{float(pl.concat([train, test])['click'].mean() or 0.0):.4f}"  # type: ignore[arg-type]
    )
    print(f"features from: {'; '.join(t.sources)}")
    version = "" if written.dataset_version is None else f" (dataset version {written.dataset_version})"
    print(f"fingerprint {written.fingerprint}{version}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``forkcast-lake training-table``."""
    parser = subparsers.add_parser(
        "training-table",
        help="the pairs served in a window, labelled and with the features they were served with, as a dataset",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument(
        "--lake", default=None, help="lake prefix of the served log (default: FORKCAST_LAKE_URI)"
    )
    parser.add_argument(
        "--since", type=parse_time, required=True, help="first prediction time (Unix seconds or ISO-8601)"
    )
    parser.add_argument(
        "--until", type=parse_time, required=True, help="predictions before this time (exclusive)"
    )
    parser.add_argument(
        "--out", required=True, help="a new local directory, or s3://bucket/prefix to publish to"
    )
    parser.add_argument(
        "--features-from",
        action="append",
        default=[],
        metavar="DATA",
        help="a dataset the served feature versions were loaded from (s3://… lake dataset, every published "
        "version of it, or a local directory); repeat for several",
    )
    parser.add_argument(
        "--attribution-s",
        type=float,
        default=float(ATTRIBUTION_WINDOW_S),
        help="latest click that labels a pair, after its prediction (the online-AUC job's window)",
    )
    parser.add_argument(
        "--test-fraction",
        type=_fraction,
        default=DEFAULT_TEST_FRACTION,
        help="share of requests in the test split",
    )
    parser.add_argument(
        "--rows-per-file", type=int, default=DEFAULT_ROWS_PER_FILE, help="most click rows per parquet file"
    )
    parser.add_argument(
        "--allow-incomplete",
        action="store_true",
        help="build even when the feedback table is not yet committed up to until + attribution + clock skew "
        "(clicks not yet compacted become negatives)",
    )
    parser.set_defaults(run=_run)
