"""The features Redis's ACL users on a Redis Cluster (issue 19, ``FORKCAST_REDIS_CLUSTER=1``): with exactly the rules
the prod overlay renders (manifests/base/redis/features.acl), set on every node of a real 3-master Cluster, the
loader loads and activates a version through the real CLI, the inference reader serves a request from it, the
gateway's admin update writes every restaurant copy, and the drift job reads the features it samples. A Cluster
client also discovers the slot map (CLUSTER SLOTS) and each command's keys (COMMAND); those, and the pointer copies
``fc:live:{fc:c<j>}``, are what a single-node ACL lacked.

The users are set with ``ACL SETUSER`` on the session's Cluster rather than from an ACL file, because
``redis-cli --cluster create`` (forkcast_devservers) connects as ``default``, which the rendered file disables.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import redis
from forkcast_delivery import redis_acl
from forkcast_delivery.render import render
from redis.asyncio.cluster import RedisCluster as AsyncCluster
from redis.cluster import RedisCluster

from forkcast_contract.feature_store import (
    DEFAULT_PREFIX,
    FeatureKeys,
    meta_key,
    parse_copies,
    pointer_key,
    restaurant_value,
)
from forkcast_devservers.servers import RedisCluster as Cluster
from forkcast_gateway.feature_updates import apply_update
from forkcast_inference.features import VersionState
from forkcast_inference.sources import open_feature_source
from forkcast_inference.testing import make_settings
from forkcast_inference.testing import tiny_data as tiny_data  # the session fixture: the tiny dataset's files
from forkcast_monitoring.drift_job import Sample, features_client, served_features

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
USERS = ("gateway", "inference", "drift", "loader")
USER_ID, RESTAURANT = 11, 7


@dataclass
class Acl:
    cluster: Cluster
    passwords: dict[str, str]

    def url(self, user: str) -> str:
        """A URL naming the LAST node (not the one the loader was given) as ``user``: discovery does the rest."""
        return f"redis://{user}:{self.passwords[user]}@127.0.0.1:{self.cluster.nodes[-1].port}/0"


def _empty(cluster: Cluster) -> None:
    for node in cluster.nodes:
        r = redis.Redis(port=node.port)
        for key in r.scan_iter(match=f"{DEFAULT_PREFIX}:*", count=1000):
            r.unlink(key)


@pytest.fixture(scope="module")
def acl(redis_cluster: Cluster) -> Iterator[Acl]:
    docs = list(render(ROOT / "manifests" / "overlays" / "prod").docs)
    config = redis_acl.config_maps(docs, "redis")["acl-template"]
    passwords = {user: secrets.token_hex(16) for user in (*USERS, "exporter")}
    lines = {
        line.split()[1]: line.split()[2:]
        for line in redis_acl.acl_file(config, passwords).splitlines()
        if line.startswith("user ")
    }
    assert set(USERS) <= set(lines), lines
    _empty(redis_cluster)
    for node in redis_cluster.nodes:
        admin = redis.Redis(port=node.port)
        for user in USERS:
            admin.execute_command("ACL", "SETUSER", user, "reset", *lines[user])  # type: ignore[no-untyped-call]
    try:
        yield Acl(redis_cluster, passwords)
    finally:
        for node in redis_cluster.nodes:
            redis.Redis(port=node.port).execute_command("ACL", "DELUSER", *USERS)  # type: ignore[no-untyped-call]
        _empty(redis_cluster)


@pytest.fixture(scope="module")
def loaded(acl: Acl, tiny_data: Path) -> Acl:
    """The tiny dataset loaded and activated by `forkcast-features load`, connected as the loader user."""
    env = {
        **os.environ,
        "REDIS_URL": f"redis://loader:{acl.passwords['loader']}@127.0.0.1:{acl.cluster.nodes[0].port}/0",
        "FORKCAST_REDIS_CLUSTER": "1",
        "FORKCAST_FEATURE_PREFIX": DEFAULT_PREFIX,
    }
    done = subprocess.run(
        [str(BIN / "forkcast-features"), "load", "--data", str(tiny_data), "--activate", "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return acl


def _admin(acl: Acl) -> RedisCluster:
    return RedisCluster(host="127.0.0.1", port=acl.cluster.nodes[0].port)


def _copies(admin: RedisCluster, keys: FeatureKeys) -> list[str]:
    raw = admin.hget(meta_key(DEFAULT_PREFIX, keys.version), "restaurant_copies")
    assert isinstance(raw, bytes)
    return parse_copies(raw.decode())


def test_the_inference_user_serves_a_request_from_the_cluster(loaded: Acl) -> None:
    admin = _admin(loaded)
    version = admin.get(pointer_key(DEFAULT_PREFIX))
    assert isinstance(version, bytes)
    keys = FeatureKeys(DEFAULT_PREFIX, version.decode())
    # The events Redis is never touched by the reader; the settings require one beside a Cluster.
    settings = make_settings(
        loaded.url("inference"),
        None,
        redis_cluster=True,
        feature_prefix=DEFAULT_PREFIX,
        events_redis_url="redis://127.0.0.1:1/0",
    )
    reader = open_feature_source(settings)
    state = reader.current()
    assert state.keys.version == keys.version

    def select(state: VersionState) -> npt.NDArray[np.int64]:
        return np.array([RESTAURANT, RESTAURANT + 1], dtype=np.int64)

    fetched = asyncio.run(reader.fetch(USER_ID, select))
    assert fetched.version == keys.version
    assert fetched.user is not None and fetched.user.tobytes() == admin.get(keys.user(USER_ID))
    # The values come from the copy on the user's master; every copy holds the same bytes.
    copy = keys.with_copy(_copies(admin, keys)[0])
    assert list(fetched.values) == [
        admin.get(copy.restaurant(RESTAURANT)),
        admin.get(copy.restaurant(RESTAURANT + 1)),
    ]


def test_the_gateway_user_updates_every_copy_and_the_drift_user_reads_it(loaded: Acl) -> None:
    admin = _admin(loaded)
    live = admin.get(pointer_key(DEFAULT_PREFIX))
    assert isinstance(live, bytes)
    keys = FeatureKeys(DEFAULT_PREFIX, live.decode())
    copies = _copies(admin, keys)
    assert len(copies) == 3
    value = restaurant_value(13.75, 100.5, [0.5] * 10)

    async def update() -> str:
        client = AsyncCluster.from_url(loaded.url("gateway"))
        try:
            return await apply_update(
                client,
                DEFAULT_PREFIX,
                lambda k: k.restaurant(RESTAURANT),
                value,
                bump_restaurant_revision=True,
            )
        finally:
            await client.aclose()

    assert asyncio.run(update()) == keys.version
    for copy in copies:
        assert admin.get(keys.with_copy(copy).restaurant(RESTAURANT)) == value, copy

    drift = features_client(loaded.url("drift"), cluster=True)
    sample = Sample(
        events=1, users={keys.version: {USER_ID}}, restaurants={keys.version: {RESTAURANT}}, scores=[]
    )
    columns = served_features(drift, DEFAULT_PREFIX, sample)
    assert len(columns) == 40 and all(len(c) == 1 for c in columns.values())
    assert [float(c[0]) for name, c in columns.items()][30:] == [0.5] * 10
