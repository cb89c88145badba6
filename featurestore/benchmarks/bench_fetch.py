"""Fetch designs for one request (SPEC §5), measured on the real workload by `bench_features.py fetch`.

Each design returns the user's features and the features of the candidates within max_dist; all four must agree
(the benchmark checks it). Redis's own CPU per request is what caps a server: that is the figure to compare.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np
import numpy.typing as npt
import redis

from forkcast_contract.feature_store import (
    COORD_SCALE,
    RESTAURANT_VALUE_BYTES,
    FeatureKeys,
    unpack_restaurants,
)
from forkcast_features.geo import within_bbox

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
HASH_BUCKETS = 100


@dataclass(frozen=True)
class Request:
    user_id: int
    lat: float
    lng: float
    candidates: I64
    max_dist: float


# (user value, in-range candidate ids sorted, their packed values)
Fetched = tuple[bytes | None, list[int], list[bytes | None]]
Design = Callable[[Request], Fetched]


def prepare_aux(client: redis.Redis, keys: FeatureKeys, ids: I64, values: list[bytes]) -> None:
    """Extra structures only the alternative designs need: coordinate-only keys and hash buckets."""
    pipe = client.pipeline(transaction=False)
    for start in range(0, len(ids), 5000):
        part = range(start, min(start + 5000, len(ids)))
        pipe.mset({f"bench:c:{keys.restaurant_tag}{ids[i]}": values[i][:8] for i in part})
        for i in part:
            pipe.hset(f"bench:h:{keys.restaurant_tag}{ids[i] % HASH_BUCKETS}", str(ids[i]), values[i])
    pipe.execute()


def _mget(client: redis.Redis, keys: list[str]) -> list[bytes | None]:
    return cast("list[bytes | None]", client.mget(keys))


def _in_range(values: list[bytes], req: Request) -> I64:
    rests = unpack_restaurants(values)
    return within_bbox(req.lat, req.lng, rests.latitude, rests.longitude, req.max_dist)


def mget_all(client: redis.Redis, keys: FeatureKeys) -> Design:
    """One MGET of the user and all 1,000 candidates; filter afterwards."""

    def fetch(req: Request) -> Fetched:
        values = _mget(
            client, [keys.user(req.user_id), *[f"{keys.restaurant_base}{i}" for i in req.candidates]]
        )
        rest = [v for v in values[1:] if v is not None]
        known = [int(i) for i, v in zip(req.candidates, values[1:], strict=True) if v is not None]
        keep = _in_range(rest, req)
        return values[0], [known[k] for k in keep], [rest[k] for k in keep.tolist()]

    return fetch


def two_step(client: redis.Redis, keys: FeatureKeys) -> Design:
    """MGET of 8-byte coordinate keys, then MGET of the user and the in-range candidates' values."""

    def fetch(req: Request) -> Fetched:
        coords = _mget(client, [f"bench:c:{keys.restaurant_tag}{i}" for i in req.candidates])
        known = [int(i) for i, v in zip(req.candidates, coords, strict=True) if v is not None]
        c = (
            np.frombuffer(b"".join(v for v in coords if v is not None), dtype="<i4").reshape(-1, 2)
            / COORD_SCALE
        )
        keep = within_bbox(req.lat, req.lng, c[:, 0], c[:, 1], req.max_dist)
        ids = [known[k] for k in keep]
        values = _mget(client, [keys.user(req.user_id), *[f"{keys.restaurant_base}{i}" for i in ids]])
        return values[0], ids, list(values[1:])

    return fetch


def hash_hmget(client: redis.Redis, keys: FeatureKeys) -> Design:
    """Restaurants in HASH_BUCKETS hashes; one pipelined HMGET per bucket touched, plus the user."""

    def fetch(req: Request) -> Fetched:
        buckets: dict[int, list[int]] = {}
        for i in req.candidates.tolist():
            buckets.setdefault(i % HASH_BUCKETS, []).append(i)
        pipe = client.pipeline(transaction=False)
        pipe.get(keys.user(req.user_id))
        for b, ids in buckets.items():
            pipe.hmget(f"bench:h:{keys.restaurant_tag}{b}", [str(i) for i in ids])
        user, *parts = pipe.execute()
        known: list[int] = []
        rest: list[bytes] = []
        user = cast("bytes | None", user)
        for ids, values in zip(buckets.values(), parts, strict=True):
            for i, v in zip(ids, values, strict=True):
                if v is not None:
                    known.append(i)
                    rest.append(v)
        keep = _in_range(rest, req)
        return user, [known[k] for k in keep], [rest[k] for k in keep.tolist()]

    return fetch


class CoordsInMemory:
    """Coordinates of every restaurant held in process per feature version, checked by the revision key.

    Per request: filter in memory, then one MGET of [revision, user, in-range restaurants]; a changed revision
    means a restaurant moved or appeared, so the copy is reloaded and the request fetched again.
    """

    def __init__(self, client: redis.Redis, keys: FeatureKeys, n_restaurants: int) -> None:
        self.client, self.keys, self.n = client, keys, n_restaurants
        self.revision = b""
        self.reload()

    def reload(self) -> None:
        ids = list(range(self.n))
        raw: list[bytes | None] = []
        for start in range(0, self.n, 10_000):
            raw.extend(
                _mget(self.client, [f"{self.keys.restaurant_base}{i}" for i in ids[start : start + 10_000]])
            )
        self.lat = np.full(self.n, np.nan)
        self.lng = np.full(self.n, np.nan)
        present = [i for i, v in enumerate(raw) if v is not None and len(v) == RESTAURANT_VALUE_BYTES]
        rests = unpack_restaurants([raw[i] or b"" for i in present])
        self.lat[present], self.lng[present] = rests.latitude, rests.longitude
        self.revision = cast("bytes | None", self.client.get(self.keys.restaurant_revision)) or b""

    def fetch(self, req: Request) -> Fetched:
        cand = req.candidates[(req.candidates >= 0) & (req.candidates < self.n)]
        keep = within_bbox(req.lat, req.lng, self.lat[cand], self.lng[cand], req.max_dist)
        ids = cand[keep].tolist()
        values = _mget(
            self.client,
            [
                self.keys.restaurant_revision,
                self.keys.user(req.user_id),
                *[f"{self.keys.restaurant_base}{i}" for i in ids],
            ],
        )
        if values[0] != self.revision:
            self.reload()
            return self.fetch(req)
        return values[1], ids, list(values[2:])
