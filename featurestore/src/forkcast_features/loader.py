"""Load a dataset into a new feature version: pipelined batched writes, resumable and idempotent.

The version name derives from the source fingerprint, so a rerun after a crash finds the partial version and
continues from its watermark (``users_loaded`` / ``restaurants_loaded``, written in the same pipeline right after
each batch's data, so Redis never records rows it has not applied). Rewriting a batch is harmless: values are
deterministic. The live pointer is never touched here; activation is a separate step (``cutover``).

On a Redis Cluster the restaurants are written once per copy (one per master, ``forkcast_features.copies``), every
copy of a batch before its watermark, so a resumed load never finds a copy behind another.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from tqdm import tqdm

from forkcast_contract.feature_store import (
    LAYOUT_VERSION,
    RESTAURANT_VALUE_BYTES,
    STATE_LOADED,
    STATE_LOADING,
    STATE_VERIFIED,
    USER_VALUE_BYTES,
    FeatureKeys,
    VersionMeta,
    copies_key,
    meta_key,
    pack_restaurants,
    pack_users,
    parse_copies,
    version_name,
)
from forkcast_contract.features import feature_schema_hash
from forkcast_features.client import Client, mset
from forkcast_features.copies import choose_copies
from forkcast_features.source import SourceData, read_source
from forkcast_features.versions import now, read_meta, set_fields, write_meta

log = logging.getLogger(__name__)


class LoadError(RuntimeError):
    """Redis failed mid-load; the partial version is named so it can be resumed or dropped."""


@dataclass(frozen=True)
class LoadResult:
    version: str
    users_written: int
    restaurants_written: int
    seconds: float
    resumed: bool


def _write_table(
    client: Client,
    prefix: str,
    version: str,
    kind: str,
    bases: list[str],
    ids: list[int],
    values: bytes,
    width: int,
    start: int,
    batch_rows: int,
    bar: tqdm | None,  # type: ignore[type-arg]
) -> int:
    watermark = f"{kind}_loaded"
    written = 0
    for lo in range(start, len(ids), batch_rows):
        hi = min(lo + batch_rows, len(ids))
        vals = [values[j * width : (j + 1) * width] for j in range(lo, hi)]
        keys = [f"{base}{i}" for base in bases for i in ids[lo:hi]]
        mset(client, keys, vals * len(bases), then_hset=(meta_key(prefix, version), watermark, str(hi)))
        written += hi - lo
        if bar is not None:
            bar.update(hi - lo)
    return written


def load_version(
    client: Client,
    source: SourceData,
    *,
    prefix: str,
    batch_rows: int = 20_000,
    progress: bool = True,
) -> LoadResult:
    """Write (or finish writing) the version of ``source``; returns what this run wrote."""
    started = time.perf_counter()
    schema = feature_schema_hash()
    version = version_name(source.manifest.fingerprint, schema)
    keys = FeatureKeys(prefix, version)
    users, rests = source.users, source.restaurants
    try:
        meta = read_meta(client, prefix, version)
        resumed = meta is not None
        if meta is None:
            meta = VersionMeta(
                version=version,
                layout_version=LAYOUT_VERSION,
                feature_schema_hash=schema,
                source_fingerprint=source.manifest.fingerprint,
                users=len(users.ids),
                restaurants=len(rests.ids),
                state=STATE_LOADING,
                created_at=now(),
                restaurant_copies=",".join(choose_copies(client, prefix)),
            )
            write_meta(client, prefix, meta)
            if meta.restaurant_copies:
                client.sadd(copies_key(prefix), *parse_copies(meta.restaurant_copies))
        elif meta.state in (STATE_LOADED, STATE_VERIFIED):
            return LoadResult(version, 0, 0, time.perf_counter() - started, resumed=True)
        copies = parse_copies(meta.restaurant_copies)
        total = len(users.ids) + len(rests.ids)
        done = meta.users_loaded + meta.restaurants_loaded
        bar = tqdm(
            total=total,
            initial=done,
            unit="rows",
            unit_scale=True,
            desc=f"load {version}",
            disable=not progress,
            smoothing=0.1,
        )
        with bar:
            r_written = _write_table(
                client,
                prefix,
                version,
                "restaurants",
                [keys.with_copy(c).restaurant_base for c in copies],
                rests.ids.tolist(),
                pack_restaurants(rests.latitude, rests.longitude, rests.features),
                RESTAURANT_VALUE_BYTES,
                meta.restaurants_loaded,
                batch_rows,
                bar,
            )
            u_written = _write_table(
                client,
                prefix,
                version,
                "users",
                [keys.user_base],
                users.ids.tolist(),
                pack_users(users.features),
                USER_VALUE_BYTES,
                meta.users_loaded,
                batch_rows,
                bar,
            )
        for c in copies:
            client.set(keys.with_copy(c).restaurant_revision, 0, nx=True)
        set_fields(client, prefix, version, state=STATE_LOADED, loaded_at=now())
    except redis.RedisError as exc:
        raise LoadError(
            f"Redis failed while loading version {version} ({exc}); the live version is untouched. "
            f"Rerun the same load to resume, or `forkcast-features gc --drop {version}` to discard it."
        ) from exc
    return LoadResult(version, u_written, r_written, time.perf_counter() - started, resumed)


def load_dir(client: Client, data_dir: Path, *, prefix: str, batch_rows: int, progress: bool) -> LoadResult:
    return load_version(
        client, read_source(data_dir), prefix=prefix, batch_rows=batch_rows, progress=progress
    )
