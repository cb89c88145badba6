"""Live single-entity updates in the live version, visible to the next request.

Used by `forkcast-features update-user|update-restaurant` and, later, by an authenticated admin endpoint.
A restaurant update also bumps the version's restaurant revision in the same MULTI (both keys share one hash
slot), so a server holding coordinates in memory sees the change on its next request.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from forkcast_contract.feature_store import FeatureKeys, meta_key, pack_restaurants, pack_users
from forkcast_contract.features import RESTAURANT_FEATURE_COUNT, USER_FEATURE_COUNT
from forkcast_features.client import Client
from forkcast_features.versions import live_version


class UpdateError(ValueError):
    """The update was refused (bad values, unknown entity, or no live version); nothing was written."""


def _checked(values: Sequence[float], count: int, what: str) -> npt.NDArray[np.float64]:
    arr = np.asarray(values, dtype=np.float64).reshape(1, -1)
    if arr.shape[1] != count:
        raise UpdateError(f"{what}: {arr.shape[1]} values, expected {count}")
    if not np.isfinite(arr).all() or (np.abs(arr) > np.finfo(np.float32).max).any():
        raise UpdateError(f"{what}: values must be finite float32")
    return arr


def _live(client: Client, prefix: str) -> FeatureKeys:
    version = live_version(client, prefix)
    if version is None:
        raise UpdateError("no live feature version to update")
    return FeatureKeys(prefix, version)


def _confirm(client: Client, prefix: str, keys: FeatureKeys) -> str:
    # A cutover between our pointer read and our write would leave the update in a retired version: say so.
    if live_version(client, prefix) != keys.version:
        raise UpdateError(
            f"the live version changed during the update (wrote {keys.version}); apply it again"
        )
    client.hincrby(meta_key(prefix, keys.version), "updates", 1)
    return keys.version


def update_user(client: Client, prefix: str, user_id: int, features: Sequence[float]) -> str:
    """Replace one user's features in the live version; returns that version."""
    arr = _checked(features, USER_FEATURE_COUNT, f"user {user_id}")
    keys = _live(client, prefix)
    # XX: only an existing user; a new id would break the version's counts.
    if not client.set(keys.user(user_id), pack_users(arr), xx=True):
        raise UpdateError(f"user {user_id} does not exist in version {keys.version}")
    return _confirm(client, prefix, keys)


def update_restaurant(
    client: Client,
    prefix: str,
    restaurant_id: int,
    latitude: float,
    longitude: float,
    features: Sequence[float],
) -> str:
    """Replace one restaurant's coordinates and features in the live version; returns that version."""
    arr = _checked(features, RESTAURANT_FEATURE_COUNT, f"restaurant {restaurant_id}")
    if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        raise UpdateError(f"restaurant {restaurant_id}: coordinates {latitude}, {longitude} out of range")
    keys = _live(client, prefix)
    value = pack_restaurants(np.array([latitude]), np.array([longitude]), arr)
    pipe = client.pipeline(transaction=True)
    pipe.set(keys.restaurant(restaurant_id), value, xx=True)
    pipe.incr(keys.restaurant_revision)
    written, _ = pipe.execute()
    if not written:
        raise UpdateError(f"restaurant {restaurant_id} does not exist in version {keys.version}")
    return _confirm(client, prefix, keys)
