"""Served-log tables from hand-made stream records, for the point-in-time tests (no Redis, no compaction job).

Records go through the same decoders the compaction job uses (forkcast_lake.served_log) and are committed with the
same partitioning, so a test states its traffic as the producers would have written it (field names from
forkcast_contract.streams; feature updates built by the producers' own ``update_event_fields``) and reads it back
exactly as a real log. Stream entry ids are ``<arrival ms>-<seq>``, as Redis assigns them.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from deltalake import CommitProperties, Transaction, write_deltalake

from forkcast_contract.dataset import (
    DATASET_MANIFEST_FILE,
    RESTAURANT_FEATURES_FILE,
    USER_FEATURES_FILE,
    DatasetManifest,
    DatasetSizes,
    dataset_fingerprint,
    file_entry,
)
from forkcast_contract.feature_store import restaurant_value, user_value, version_name
from forkcast_contract.feature_update_events import update_event_fields
from forkcast_contract.features import RESTAURANT_FEATURES, USER_FEATURES, feature_schema_hash
from forkcast_contract.streams import (
    FEATURE_UPDATES_STREAM,
    FEEDBACK_FIELDS,
    FEEDBACK_STREAM,
    PREDICTION_FIELDS,
    PREDICTIONS_STREAM,
)
from forkcast_lake.compact import app_id
from forkcast_lake.served_log import PARTITION_BY, SERVED_TABLES
from forkcast_lake.storage import options_for, table_uri
from forkcast_lake.stream_ids import StreamId


@dataclass
class LogWriter:
    """Collects stream records in arrival order; ``commit`` writes them as the three served-log tables."""

    entries: dict[str, list[tuple[bytes, list[bytes]]]] = field(default_factory=lambda: defaultdict(list))
    _last: dict[str, tuple[int, int]] = field(default_factory=dict)

    def _add(self, stream: str, fields: dict[str, str], arrival: float) -> str:
        ms = int(arrival * 1000)
        last_ms, last_seq = self._last.get(stream, (0, -1))
        ms = max(ms, last_ms)  # Redis ids never go back
        seq = last_seq + 1 if ms == last_ms else 0
        self._last[stream] = (ms, seq)
        entry_id = f"{ms}-{seq}"
        flat = [part.encode() for pair in fields.items() for part in pair]
        self.entries[stream].append((entry_id.encode(), flat))
        return entry_id

    def prediction(
        self,
        rid: str,
        ts: float,
        user: int,
        scores: dict[int, float],
        *,
        model: str = "m1",
        fv: str = "fv1",
        key: str = "k1",
        arrival: float | None = None,
    ) -> str:
        values = (rid, f"{ts:.6f}", str(user), model, fv, json.dumps(list(scores)),
                  json.dumps(list(scores.values())), key)  # fmt: skip
        return self._add(PREDICTIONS_STREAM, dict(zip(PREDICTION_FIELDS, values, strict=True)), arrival or ts)

    def feedback(
        self,
        rid: str,
        restaurant: int,
        clicked: bool,
        ts: float,
        *,
        key: str = "k1",
        arrival: float | None = None,
    ) -> str:
        values = (rid, str(restaurant), str(int(clicked)), f"{ts:.6f}", key)
        return self._add(FEEDBACK_STREAM, dict(zip(FEEDBACK_FIELDS, values, strict=True)), arrival or ts)

    def user_update(self, user: int, features: list[float], ts: float, *, fv: str = "fv1") -> str:
        fields = update_event_fields("user", user, fv, user_value(features), ts, "cli:test")
        return self._add(FEATURE_UPDATES_STREAM, fields, ts)

    def restaurant_update(
        self,
        restaurant: int,
        latitude: float,
        longitude: float,
        features: list[float],
        ts: float,
        *,
        fv: str = "fv1",
    ) -> str:
        value = restaurant_value(latitude, longitude, features)
        fields = update_event_fields("restaurant", restaurant, fv, value, ts, "cli:test")
        return self._add(FEATURE_UPDATES_STREAM, fields, ts)

    def commit(self, base: str, batches: int = 1) -> None:
        """Append the records to the tables under ``base`` in ``batches`` commits per table (each commit at least
        one file per day: more batches, more small files), then forget them. Each commit carries the compaction's
        ``txn`` (its stream's appId, the batch's last entry id), so the table's committed position is as real."""
        for spec in SERVED_TABLES:
            entries = self.entries.pop(spec.stream, [])
            if not entries:
                continue
            uri = table_uri(base, spec.table)
            size = -(-len(entries) // batches)
            for start in range(0, len(entries), size):
                decoded = spec.decode(entries[start : start + size])
                assert decoded.malformed == 0, f"{spec.stream}: {decoded.malformed} records did not decode"
                last = StreamId.parse(entries[start : start + size][-1][0])
                write_deltalake(
                    uri,
                    decoded.table,
                    mode="append",
                    partition_by=list(PARTITION_BY),
                    storage_options=options_for(uri),
                    commit_properties=CommitProperties(
                        app_transactions=[Transaction(app_id(spec.stream), last.to_version())]
                    ),
                )


def write_features_dataset(directory: Path, users: int, restaurants: int, seed: int = 0) -> str:
    """A small dataset directory of feature tables only (what a feature version is loaded from), features drawn as
    float32 like the generator's; returns the name ``forkcast-features load`` gives the version loaded from it."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    user_frame = pl.DataFrame(
        {"user_id": np.arange(users, dtype=np.int64)}
        | {name: rng.standard_normal(users).astype(np.float32).astype(np.float64) for name in USER_FEATURES}
    )
    rest_frame = pl.DataFrame(
        {
            "restaurant_id": np.arange(restaurants, dtype=np.int64),
            "latitude": rng.uniform(13.6, 14.1, restaurants),
            "longitude": rng.uniform(100.3, 100.8, restaurants),
        }
        | {
            name: rng.standard_normal(restaurants).astype(np.float32).astype(np.float64)
            for name in RESTAURANT_FEATURES
        }
    )
    user_frame.write_parquet(directory / USER_FEATURES_FILE)
    rest_frame.write_parquet(directory / RESTAURANT_FEATURES_FILE)
    files = [
        file_entry(directory, directory / USER_FEATURES_FILE, users),
        file_entry(directory, directory / RESTAURANT_FEATURES_FILE, restaurants),
    ]
    sizes = DatasetSizes(
        users=users,
        restaurants=restaurants,
        train_files=0,
        test_files=0,
        rows_per_file=1,
        requests=0,
        candidates=1,
    )
    manifest = DatasetManifest(
        preset="test-features", seed=seed, drift=0.0, sizes=sizes, files=files, fingerprint=dataset_fingerprint(files),
        click_rate={}, generator_version="pit_testing", created_at="2027-01-01T00:00:00+00:00",
    )  # fmt: skip
    (directory / DATASET_MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2))
    return version_name(manifest.fingerprint, feature_schema_hash())
