"""The request MGET pre-encoded from per-key RESP fragments is byte for byte the command redis-py would send."""

from __future__ import annotations

import hiredis

from forkcast_contract.feature_store import FeatureKeys, pointer_key
from forkcast_inference.features import MgetWire


def test_pre_encoded_mget_is_the_packed_command_with_the_same_keys_in_order() -> None:
    keys = FeatureKeys("fc", "v20261205")
    wire = MgetWire.of(pointer_key("fc"), keys, 1_000)
    ids = [999, 0, 42, 7]
    want = hiredis.pack_command(
        (
            "MGET",
            pointer_key("fc"),
            keys.restaurant_revision,
            keys.user(123_456),
            *[keys.restaurant(i) for i in ids],
        )
    )
    assert wire.mget(123_456, ids) == want
    # No candidate in range: still pointer, revision and user, so the version checks run.
    assert wire.mget(5, []) == hiredis.pack_command(
        ("MGET", pointer_key("fc"), keys.restaurant_revision, keys.user(5))
    )
    assert len(wire.restaurants) == 1_000 and wire.version == "v20261205"
