"""The feature-store reader of one worker: live pointer, in-memory coordinates, one MGET per request (SPEC §5).

Measured design (featurestore/BENCHMARKS.md, `bench_features.py fetch`): one MGET of all 1,001 keys caps
a server at ≈ 1,200 req/s because Redis spends ≈ 0.8 µs per key; holding the restaurant coordinates of the live
version in memory, filtering by distance first and fetching only the in-range candidates reached 8,557 fetches/s.
Coordinates are reference data, so holding them is allowed as long as every change is seen: the single MGET of a
request also reads the live pointer and the version's restaurant revision, and a request that sees either change
reloads and fetches again, so no request mixes versions or uses stale coordinates.

Standalone Redis only: the MGET spans the pointer, the user and the restaurants' slots (on Redis Cluster the user
and the pointer would need their own calls). The MGET goes out on the worker's one pipelined asyncio connection
(forkcast_inference.pipelined), so the event loop serves other requests during the round trip.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, cast

import numpy as np
import numpy.typing as npt
import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from forkcast_contract.feature_store import (
    COORD_SCALE,
    COORD_WIRE_DTYPE,
    FEATURE_WIRE_DTYPE,
    RESTAURANT_VALUE_BYTES,
    USER_VALUE_BYTES,
    FeatureKeys,
    VersionMeta,
    meta_key,
    pointer_key,
)
from forkcast_inference.pipelined import PipelinedRedis

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
_RELOAD_CHUNK = 10_000
_MAX_ATTEMPTS = 3


class NoLiveVersionError(LookupError):
    """The pointer names no version, or a version without metadata."""


class CorruptUserError(ValueError):
    """The user's stored value has the wrong length."""


@dataclass(frozen=True)
class VersionState:
    """One feature version as this worker holds it: coordinates of restaurant id i at index i (NaN: absent)."""

    keys: FeatureKeys
    meta: VersionMeta
    revision: bytes
    lat: F64
    lng: F64


@dataclass(frozen=True)
class Fetched:
    """One request's features, all from ``version``: the user (None if unknown) and the candidates asked for."""

    version: str
    schema_hash: str
    user: npt.NDArray[np.float32] | None
    ids: I64  # candidates fetched (in range by the in-memory coordinates)
    values: list[bytes | None]


def connect(url: str, timeout_s: float) -> redis.Redis:
    """A client whose every call fails within about ``timeout_s`` and reconnects by itself on the next call.

    No retries (redis-py retries 3 times by default, which would triple the deadline).
    """
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


# Chooses, from a version's in-memory coordinates, which candidate ids a request fetches.
SelectFn = Callable[[VersionState], I64]


class FeatureSource(Protocol):
    """What the app needs from a feature store, standalone (``FeatureReader``) or Redis Cluster.

    Both readers keep the same contract: ``fetch`` returns values of one version only (it rereads and reloads when
    the live pointer or the restaurant revision changed under it) and raises ``NoLiveVersionError`` /
    ``CorruptUserError`` / ``redis.RedisError`` for the app to map to 503 / 500 / 503.
    """

    # The version this worker holds (None before the first load); /version reports it.
    state: VersionState | None

    def load(self, version: str) -> VersionState:
        """Read ``version``'s metadata and restaurant coordinates and make it the held state."""
        ...

    def current(self) -> VersionState:
        """The live version's state, loading it if the live pointer moved (readiness and start)."""
        ...

    async def fetch(self, user_id: int, select: SelectFn) -> Fetched:
        """The user's vector and the values of the candidates ``select`` picks, all from one version."""
        ...


class FeatureReader:
    """Holds the live version's coordinates; ``fetch`` returns a request's user and candidate values."""

    def __init__(self, client: redis.Redis, prefix: str, timeout_s: float) -> None:
        self.client = client
        self.prefix = prefix
        self.pointer = pointer_key(prefix)
        self.state: VersionState | None = None
        # The hot path's own connection, to the pool's server as the pool's ACL user, shared by the worker's
        # concurrent requests (pipelined); only ``fetch`` uses it. ``load``/``current`` use the pool (blocking:
        # at start, on /readyz and on a version change only).
        self.pipe = PipelinedRedis(client, timeout_s)
        self._wire: MgetWire | None = None
        # ``load`` runs on the loop (a request that met a new version) and in /readyz's worker thread: a load
        # publishes its state only if none was published since it began, so an older load never replaces a newer.
        self._publishing = threading.Lock()

    def load(self, version: str) -> VersionState:
        """Read a version's metadata and every restaurant's coordinates (≈ 0.3 s for 100k restaurants); publish it
        unless another load published since this one began (its state is still returned to the caller)."""
        before = self.state
        raw_meta = cast("dict[bytes, bytes]", self.client.hgetall(meta_key(self.prefix, version)))
        if not raw_meta:
            raise NoLiveVersionError(f"feature version {version} has no metadata")
        meta = VersionMeta.from_redis(raw_meta)
        keys = FeatureKeys(self.prefix, version)
        # The revision is read before the coordinates: a change in between is seen by the next request.
        revision = cast("bytes | None", self.client.get(keys.restaurant_revision)) or b""
        lat, lng = load_coordinates(self.client, keys, meta.restaurants)
        state = VersionState(keys, meta, revision, lat, lng)
        with self._publishing:
            if self.state is before:
                self.state = state
                self._wire = MgetWire.of(self.pointer, keys, meta.restaurants)
        return state

    def current(self) -> VersionState:
        """The live version's state, loading it if the pointer moved (used by /readyz and at start)."""
        live = cast("bytes | None", self.client.get(self.pointer))
        if live is None:
            raise NoLiveVersionError(f"{self.pointer} names no feature version")
        name = live.decode()
        state = self.state
        if state is None or state.keys.version != name:
            state = self.load(name)
        return state

    async def fetch(self, user_id: int, select: SelectFn) -> Fetched:
        """One MGET of [pointer, revision, user, in-range restaurants]; reload and refetch on any change.

        Concurrent calls share the pipelined connection; each uses the ``state`` it started with, so a reload by
        one request meanwhile never mixes versions in another.
        """
        state = self.state or self.current()
        for _ in range(_MAX_ATTEMPTS):
            ids = select(state)
            keys = state.keys
            wire = self._wire
            if wire is None or wire.version != keys.version:
                wire = self._wire = MgetWire.of(self.pointer, keys, state.meta.restaurants)
            values = cast("list[bytes | None]", await self.pipe.execute(wire.mget(user_id, ids.tolist())))
            live = values[0]
            if live is None:
                raise NoLiveVersionError(f"{self.pointer} names no feature version")
            if live.decode() != keys.version:
                state = self.load(live.decode())
                continue
            if (values[1] or b"") != state.revision:
                state = self.load(keys.version)
                continue
            user = user_features(user_id, values[2])
            return Fetched(keys.version, state.meta.feature_schema_hash, user, ids, values[3:])
        raise NoLiveVersionError("feature version kept changing during the request")


def user_features(user_id: int, raw: bytes | None) -> npt.NDArray[np.float32] | None:
    """A user's stored value as its features (None: unknown user); a value of the wrong length raises
    ``CorruptUserError`` (a 500: the store holds something this version's schema does not describe)."""
    if raw is None:
        return None
    if len(raw) != USER_VALUE_BYTES:
        raise CorruptUserError(f"user {user_id} value has {len(raw)} bytes")
    return np.frombuffer(raw, dtype=FEATURE_WIRE_DTYPE)


def _bulk(key: bytes) -> bytes:
    """``key`` as a RESP bulk string (https://redis.io/docs/latest/develop/reference/protocol-spec/#bulk-strings)."""
    return b"$%d\r\n%b\r\n" % (len(key), key)


@dataclass(frozen=True)
class MgetWire:
    """A version's request MGET, pre-encoded: the command is joined from per-key RESP fragments built at load.

    Why: building the key strings and redis-py's ``mget`` (``pack_command`` + ``execute_command``) cost 60-70 µs
    of CPU per request for ~50 keys; the same bytes sent with redis-py's ``send_packed_command`` on its own
    connection cost 21 µs (raw hiredis over a socket: 16 µs), measured 2026-12-05 on this 2-core machine,
    loaded by other agents (docs/benchmarks.md, "inference CPU per request"). The bytes go out on the pipelined
    connection (forkcast_inference.pipelined). ≈ 30 B per restaurant id of memory.
    """

    version: str
    head: bytes  # pointer and revision
    user_base: bytes
    restaurants: list[bytes]  # fragment of restaurant id i at index i

    @classmethod
    def of(cls, pointer: str, keys: FeatureKeys, n: int) -> MgetWire:
        base = keys.restaurant_base.encode()
        return cls(
            keys.version,
            _bulk(pointer.encode()) + _bulk(keys.restaurant_revision.encode()),
            keys.user_base.encode(),
            [_bulk(b"%b%d" % (base, i)) for i in range(n)],
        )

    def mget(self, user_id: int, ids: list[int]) -> bytes:
        """``MGET pointer revision user r<id>…``; every id is in [0, n) (the selection only picks loaded ids)."""
        frags = self.restaurants
        user = b"%b%d" % (self.user_base, user_id)
        return b"".join(
            [b"*%d\r\n$4\r\nMGET\r\n" % (len(ids) + 4), self.head, _bulk(user), *[frags[i] for i in ids]]
        )


def load_coordinates(client: redis.Redis | RedisCluster, keys: FeatureKeys, n: int) -> tuple[F64, F64]:
    """Coordinates of restaurant ids 0..n-1 of ``keys``' table (NaN: absent or corrupt), in MGETs of one slot.

    Shared by both readers: on a Cluster ``keys`` names one restaurant copy, whose keys share one slot.
    """
    lat, lng = np.full(n, np.nan), np.full(n, np.nan)
    base = keys.restaurant_base
    for start in range(0, n, _RELOAD_CHUNK):
        stop = min(start + _RELOAD_CHUNK, n)
        values = cast("list[bytes | None]", client.mget([f"{base}{i}" for i in range(start, stop)]))
        good = [i for i, v in enumerate(values) if v is not None and len(v) == RESTAURANT_VALUE_BYTES]
        if good:
            buf = b"".join(cast("bytes", values[i])[:8] for i in good)
            coords = np.frombuffer(buf, dtype=COORD_WIRE_DTYPE).reshape(-1, 2) / COORD_SCALE
            idx = np.asarray(good) + start
            lat[idx], lng[idx] = coords[:, 0], coords[:, 1]
    return lat, lng
