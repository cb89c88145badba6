"""Reading one request's features the way a server must: the pointer first, then only that version's keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from forkcast_contract.feature_store import FeatureKeys, parse_copies
from forkcast_features.client import Client, is_cluster
from forkcast_features.versions import live_version, read_meta


class NoLiveVersionError(LookupError):
    """The pointer names no version (nothing activated yet)."""


@dataclass(frozen=True)
class RequestFeatures:
    version: str
    user: bytes | None
    restaurants: list[bytes | None]


def read_request(client: Client, prefix: str, user_id: int, restaurant_ids: list[int]) -> RequestFeatures:
    """The user and candidates of one request, all from the version live when the request started."""
    version = live_version(client, prefix)
    if version is None:
        raise NoLiveVersionError(f"{prefix}: no live feature version")
    keys = FeatureKeys(prefix, version)
    if is_cluster(client):
        # A copy's restaurants share one slot: one MGET on one node; the user key lives elsewhere. (The service's
        # reader picks the copy on the user's node; this tool reads the first.)
        meta = read_meta(client, prefix, version)
        keys = keys.with_copy(parse_copies(meta.restaurant_copies if meta else "")[0])
    rkeys = [f"{keys.restaurant_base}{i}" for i in restaurant_ids]
    if is_cluster(client):
        user = cast("bytes | None", client.get(keys.user(user_id)))
        rests = cast("list[bytes | None]", client.mget(rkeys) if rkeys else [])
        return RequestFeatures(version, user, rests)
    values = cast("list[bytes | None]", client.mget([keys.user(user_id), *rkeys]))
    return RequestFeatures(version, values[0], values[1:])
