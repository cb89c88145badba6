"""Unit tests of the shared Redis layout (contract package): packing, precision, key names and hash slots."""

from __future__ import annotations

import numpy as np
import pytest
from redis.crc import key_slot

from forkcast_contract.dataset import BANGKOK
from forkcast_contract.feature_store import (
    RESTAURANT_VALUE_BYTES,
    USER_VALUE_BYTES,
    FeatureKeys,
    VersionMeta,
    pack_restaurants,
    pack_users,
    parse_copies,
    pointer_copy_key,
    restaurant_copy_keys,
    split_values,
    unpack_restaurants,
    unpack_users,
    version_name,
)


def _haversine_m(lat1: np.ndarray, lng1: np.ndarray, lat2: np.ndarray, lng2: np.ndarray) -> np.ndarray:
    p1, p2 = np.radians(lat1), np.radians(lat2)
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(np.radians(lng2 - lng1) / 2) ** 2
    return 2 * 6_371_008.8 * np.arcsin(np.sqrt(a))


def test_user_values_round_trip_float32_exactly() -> None:
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(50, 30))
    values = split_values(pack_users(feats), USER_VALUE_BYTES)
    assert len(values) == 50 and all(len(v) == 120 for v in values)
    np.testing.assert_array_equal(unpack_users(values), feats.astype(np.float32))


def test_restaurant_coordinates_keep_displacement_within_half_a_metre() -> None:
    rng = np.random.default_rng(2)
    n = 20_000
    lat = rng.uniform(BANGKOK.min_lat, BANGKOK.max_lat, n)
    lng = rng.uniform(BANGKOK.min_lng, BANGKOK.max_lng, n)
    feats = rng.normal(size=(n, 10))
    out = unpack_restaurants(split_values(pack_restaurants(lat, lng, feats), RESTAURANT_VALUE_BYTES))
    np.testing.assert_array_equal(out.features, feats.astype(np.float32))
    # Displacement from any point may change by at most the stored position's error.
    assert _haversine_m(lat, lng, out.latitude, out.longitude).max() < 0.05


def test_wrong_length_values_are_rejected() -> None:
    with pytest.raises(ValueError, match="expected 120"):
        unpack_users([b"\x00" * 119])
    with pytest.raises(ValueError, match="expected 48"):
        unpack_restaurants([b"\x00" * 120])


def test_restaurants_and_their_revision_share_one_slot_users_spread() -> None:
    keys = FeatureKeys("fc", "abcd1234")
    slots = {key_slot(keys.restaurant(i).encode()) for i in range(0, 100_000, 997)}
    assert slots == {key_slot(keys.restaurant_revision.encode())}
    user_slots = {key_slot(keys.user(i).encode()) for i in range(10_000)}
    assert len(user_slots) > 5000
    assert keys.user(7) == "fc:abcd1234:u:7"
    assert keys.restaurant(7).startswith("fc:abcd1234:r:")


def test_a_restaurant_copy_shares_its_slot_with_its_revision_and_pointer_copy_in_every_version() -> None:
    # The Cluster reader's one MGET per request is [pointer copy, revision, restaurants]: one slot, or CROSSSLOT.
    for version in ("abcd1234", "0badc0de"):
        keys = FeatureKeys("fc", version, "c3")
        slots = {key_slot(keys.restaurant(i).encode()) for i in range(0, 100_000, 997)}
        assert (
            slots
            == {key_slot(keys.restaurant_revision.encode())}
            == {key_slot(pointer_copy_key("fc", "c3").encode())}
        )
        assert keys.restaurant(7) == f"fc:{version}:r:{{fc:c3}}7"
    # The single table (standalone) keeps its names, so the standalone reader's keys do not move.
    assert FeatureKeys("fc", "abcd1234").with_copy("").restaurant(7) == "fc:abcd1234:r:{abcd1234:r}7"
    assert parse_copies("c0,c4,c9") == ["c0", "c4", "c9"] and parse_copies("") == [""]
    # What every single-restaurant writer (CLI, gateway) updates: each copy, its value and revision in one slot.
    live = FeatureKeys("fc", "abcd1234")
    targets = restaurant_copy_keys(live, "c0,c4")
    assert [k.restaurant(7) for k in targets] == ["fc:abcd1234:r:{fc:c0}7", "fc:abcd1234:r:{fc:c4}7"]
    assert all(
        key_slot(k.restaurant(7).encode()) == key_slot(k.restaurant_revision.encode()) for k in targets
    )
    assert restaurant_copy_keys(live, "") == [live]  # a version without copies: the single table


def test_version_name_is_deterministic_and_depends_on_source_and_schema() -> None:
    fp = "a" * 64
    assert version_name(fp, "s1") == version_name(fp, "s1")
    assert version_name(fp, "s1") != version_name("b" * 64, "s1")
    assert version_name(fp, "s1") != version_name(fp, "s2")


def test_meta_round_trips_through_redis_strings() -> None:
    meta = VersionMeta("v", 1, "h", "f" * 64, 10, 2, "loading", "2026-11-23T00:00:00+00:00", users_loaded=5)
    raw = {k.encode(): v.encode() for k, v in meta.to_redis().items()}
    assert VersionMeta.from_redis(raw) == meta
