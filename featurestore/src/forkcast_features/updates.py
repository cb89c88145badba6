"""Live single-entity updates in the live version, visible to the next request.

Used by `forkcast-features update-user|update-restaurant`. The gateway's admin endpoint applies the same update
with its own async Redis client (services/gateway/src/forkcast_gateway/feature_updates.py): both take the value
and its checks from ``forkcast_contract.feature_store`` (``user_value``, ``restaurant_value``), so they refuse the
same inputs and write the same bytes; only the few Redis calls are written twice (sync here, asyncio there), because
the contract may not depend on redis and the gateway may not depend on this package (it pulls polars).
A restaurant update also bumps the version's restaurant revision in the same atomic step (one script on keys that
share one hash slot), so a server holding coordinates in memory sees the change on its next request. On a Redis
Cluster it does so in every restaurant copy of the version (``VersionMeta.restaurant_copies``), each copy with its
own revision: a reader checks the revision of the copy it reads, in the same MGET as the values.

Given an :class:`UpdateLog` (the CLI always gives one), an update is appended to FEATURE_UPDATES_STREAM in the events
Redis after the write succeeded (forkcast_contract.feature_update_events: the values as stored), the record the
lake's served log keeps; the gateway's admin route logs its updates the same way. A failed append after the write
raises :class:`UpdateNotLoggedError` ("applied but not logged; resend"): the write cannot be taken back.
"""

from __future__ import annotations

import getpass
import time
from collections.abc import Sequence

import redis

from forkcast_contract.feature_store import (
    SET_AND_BUMP_SCRIPT,
    FeatureKeys,
    meta_key,
    restaurant_copy_keys,
    restaurant_value,
    user_value,
)
from forkcast_contract.feature_update_events import Entity, update_event_fields
from forkcast_contract.streams import FEATURE_UPDATES_MAXLEN, FEATURE_UPDATES_STREAM
from forkcast_features.client import Client
from forkcast_features.versions import live_version, read_meta


class UpdateError(ValueError):
    """The update was refused (bad values, unknown entity, or no live version); nothing was written."""


class UpdateNotLoggedError(RuntimeError):
    """The update IS applied in the live version, but its record did not reach the feature-updates stream.

    Not an :class:`UpdateError` (which means nothing was written): the caller must resend the same update so that
    the lake's served log gets it; until then a training table reads the entity's previous value for it.
    """


def _record(log: UpdateLog, entity: Entity, entity_id: int, version: str, value: bytes) -> None:
    try:
        log.record(entity, entity_id, version, value)
    except redis.RedisError as exc:
        raise UpdateNotLoggedError(
            f"{entity} {entity_id} updated in {version}: applied but not logged; resend "
            f"(appending to {log.stream} failed: {exc})"
        ) from exc


class UpdateLog:
    """Appends applied updates to the feature-updates stream of the events Redis, as ``cli:<os user>``."""

    def __init__(
        self, client: redis.Redis, stream: str = FEATURE_UPDATES_STREAM, maxlen: int = FEATURE_UPDATES_MAXLEN
    ) -> None:
        self.client, self.stream, self.maxlen = client, stream, maxlen
        self.actor = f"cli:{getpass.getuser()}"

    def record(self, entity: Entity, entity_id: int, version: str, value: bytes) -> None:
        fields = update_event_fields(entity, entity_id, version, value, time.time(), self.actor)
        self.client.xadd(self.stream, fields, maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]


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


def update_user(
    client: Client, prefix: str, user_id: int, features: Sequence[float], log: UpdateLog | None = None
) -> str:
    """Replace one user's features in the live version (then log it to ``log``); returns that version."""
    try:
        value = user_value(features)
    except ValueError as exc:
        raise UpdateError(f"user {user_id}: {exc}") from None
    keys = _live(client, prefix)
    # XX: only an existing user; a new id would break the version's counts.
    if not client.set(keys.user(user_id), value, xx=True):
        raise UpdateError(f"user {user_id} does not exist in version {keys.version}")
    version = _confirm(client, prefix, keys)
    if log is not None:
        _record(log, "user", user_id, version, value)
    return version


def update_restaurant(
    client: Client,
    prefix: str,
    restaurant_id: int,
    latitude: float,
    longitude: float,
    features: Sequence[float],
    log: UpdateLog | None = None,
) -> str:
    """Replace one restaurant's coordinates and features in the live version (then log it); returns the version."""
    try:
        value = restaurant_value(latitude, longitude, features)
    except ValueError as exc:
        raise UpdateError(f"restaurant {restaurant_id}: {exc}") from None
    keys = _live(client, prefix)
    meta = read_meta(client, prefix, keys.version)
    for n, k in enumerate(restaurant_copy_keys(keys, meta.restaurant_copies if meta else "")):
        if (
            client.eval(SET_AND_BUMP_SCRIPT, 2, k.restaurant(restaurant_id), k.restaurant_revision, value)
            is None
        ):
            # Only the first copy can refuse: every copy holds the same ids (verified before activation).
            raise UpdateError(
                f"restaurant {restaurant_id} does not exist in version {keys.version}"
                + (f" (copy {k.copy}, after {n} updated copies)" if n else "")
            )
    version = _confirm(client, prefix, keys)
    if log is not None:
        _record(log, "restaurant", restaurant_id, version, value)
    return version
