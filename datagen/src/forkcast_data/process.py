"""The generative process of SPEC §2.

Steps 1-2 (users, restaurants) use numpy's legacy global-state RNG exactly as the original script did, so the
tables are identical to the original's: the original drew each entity with its own ``normal(loc, 0.1, dim)``
call, and legacy ``normal`` is ``loc + scale * gauss()`` over one continuous Gaussian stream, so one
``standard_normal(n * dim)`` call yields the same numbers.

Steps 3-4 (clicks, requests) follow the same process but are drawn vectorised from a seeded ``Generator``,
one independent stream per file. They are not bit-identical to the original (which drew one row at a time in
Python); per-file streams make every file reproducible on its own, so an interrupted run resumes exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from forkcast_contract.dataset import BANGKOK, GeoBox
from forkcast_contract.features import RESTAURANT_FEATURE_COUNT, SIGNAL_DIMS, USER_FEATURE_COUNT

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

N_CLUSTERS = 10
CLUSTER_SCALE = 2.0
ENTITY_SCALE = 0.1
LOGIT_NOISE = 0.1
# Stream ids for the per-file generators, so that train file 3 and test file 3 never share a stream.
_STREAM_TRAIN, _STREAM_TEST, _STREAM_REQUESTS, _STREAM_DRIFT = 0, 1, 2, 3


@dataclass(frozen=True)
class Entities:
    """The two feature tables, as the process draws them."""

    users: F32  # (n_users, 30)
    restaurants: F32  # (n_restaurants, 10)
    latitude: F64  # (n_restaurants,)
    longitude: F64  # (n_restaurants,)
    user_assign: I64
    restaurant_assign: I64


def _cluster_offsets(seed: int, dim: int, strength: float, side: int) -> F64:
    """How far each cluster centre moves in a drifted dataset: ``strength`` times a fresh centre-sized draw."""
    rng = np.random.default_rng([seed, _STREAM_DRIFT, side])
    return strength * CLUSTER_SCALE * rng.standard_normal((N_CLUSTERS, dim))


def _legacy_clustered(n: int, dim: int, offsets: F64 | None) -> tuple[F32, I64]:
    """One table of SPEC §2 steps 1-2 from the legacy global stream (must be called in the original's order)."""
    centers = np.random.randn(N_CLUSTERS, dim) * CLUSTER_SCALE
    if offsets is not None:
        centers = centers + offsets
    assign = np.random.choice(N_CLUSTERS, size=n)
    draws = np.random.standard_normal(n * dim).reshape(n, dim)
    values = centers[assign] + ENTITY_SCALE * draws
    return values.astype(np.float32), assign.astype(np.int64)


def draw_entities(
    n_users: int, n_restaurants: int, *, seed: int = 7, drift: float = 0.0, box: GeoBox = BANGKOK
) -> Entities:
    """Users and restaurants exactly as the original script drew them (for ``drift == 0``).

    With ``drift > 0`` every cluster centre moves by ``drift`` times a centre-sized random offset; the
    entities keep their cluster and their own noise, so each user is the same user, moved.
    """
    user_offsets = _cluster_offsets(seed, USER_FEATURE_COUNT, drift, 0) if drift > 0 else None
    rest_offsets = _cluster_offsets(seed, RESTAURANT_FEATURE_COUNT, drift, 1) if drift > 0 else None
    np.random.seed(seed)
    users, user_assign = _legacy_clustered(n_users, USER_FEATURE_COUNT, user_offsets)
    restaurants, rest_assign = _legacy_clustered(n_restaurants, RESTAURANT_FEATURE_COUNT, rest_offsets)
    latitude = np.random.uniform(box.min_lat, box.max_lat, size=(n_restaurants, 1))[:, 0]
    longitude = np.random.uniform(box.min_lng, box.max_lng, size=(n_restaurants, 1))[:, 0]
    return Entities(users, restaurants, latitude, longitude, user_assign, rest_assign)


def click_logit(users: F32, restaurants: F32, user_ids: I64, restaurant_ids: I64) -> F64:
    """The noise-free click logit: dot product of the signal dimensions of user and restaurant."""
    u = users[user_ids, :SIGNAL_DIMS].astype(np.float64)
    r = restaurants[restaurant_ids, :SIGNAL_DIMS].astype(np.float64)
    logit: F64 = np.einsum("ij,ij->i", u, r)
    return logit


def sigmoid(x: F64) -> F64:
    """Numerically stable logistic function."""
    out: F64 = np.exp(-np.logaddexp(0.0, -x))
    return out


def draw_clicks(entities: Entities, rows: int, *, seed: int, split: str, index: int) -> tuple[I64, I64, I64]:
    """One click file (SPEC §2 step 3): uniform user and restaurant, click ~ Bernoulli(sigmoid(dot + noise))."""
    stream = _STREAM_TRAIN if split == "train" else _STREAM_TEST
    rng = np.random.default_rng([seed, stream, index])
    user_ids = rng.integers(len(entities.users), size=rows, dtype=np.int64)
    restaurant_ids = rng.integers(len(entities.restaurants), size=rows, dtype=np.int64)
    logit = click_logit(entities.users, entities.restaurants, user_ids, restaurant_ids)
    logit += rng.normal(0.0, LOGIT_NOISE, size=rows)
    clicks = (rng.random(rows) < sigmoid(logit)).astype(np.int64)
    return user_ids, restaurant_ids, clicks


@dataclass(frozen=True)
class Requests:
    """SPEC §2 step 4, column-wise."""

    user_id: I64
    latitude: F64
    longitude: F64
    candidates: I64  # (n, candidates)
    size: I64
    max_dist: I64
    sort_dist: npt.NDArray[np.bool_]


def draw_requests(
    n_users: int, n_restaurants: int, n: int, candidates: int, *, seed: int, box: GeoBox = BANGKOK
) -> Requests:
    """Requests: distinct users, a uniform location, distinct uniform candidates, size/max_dist/sort_dist.

    Candidates are drawn per request with ``Generator.choice(replace=False)``, which samples without building
    a permutation of all restaurants; 10,000 such calls take well under a second, so they are not vectorised.
    """
    if n > n_users:
        raise ValueError(f"{n} requests need {n} distinct users but there are only {n_users}")
    if candidates > n_restaurants:
        raise ValueError(f"{candidates} distinct candidates per request but only {n_restaurants} restaurants")
    rng = np.random.default_rng([seed, _STREAM_REQUESTS])
    user_id = rng.choice(n_users, size=n, replace=False).astype(np.int64)
    latitude = rng.uniform(box.min_lat, box.max_lat, size=n)
    longitude = rng.uniform(box.min_lng, box.max_lng, size=n)
    cands = np.empty((n, candidates), dtype=np.int64)
    for i in range(n):
        cands[i] = rng.choice(n_restaurants, size=candidates, replace=False)
    size = rng.integers(1, 11, size=n, dtype=np.int64) * 100
    max_dist = rng.integers(5, 11, size=n, dtype=np.int64) * 1000
    sort_dist = rng.random(n) < 0.5
    return Requests(user_id, latitude, longitude, cands, size, max_dist, sort_dist)
