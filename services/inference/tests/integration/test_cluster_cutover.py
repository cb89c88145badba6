"""Cutover on a 3-master Redis Cluster, where MULTI cannot span slots: a reader fetching while the live version
flips back and forth never gets a value of one version under the name of another, and sees a live restaurant
update in whichever copy it reads (issue 19).
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest
import redis

from forkcast_contract.feature_store import (
    RESTAURANT_VALUE_BYTES,
    USER_VALUE_BYTES,
    pack_restaurants,
    pack_users,
)
from forkcast_data.generate import GenerateRequest, generate
from forkcast_data.presets import preset_sizes
from forkcast_devservers.ready import wait_until
from forkcast_devservers.servers import RedisCluster
from forkcast_features.client import connect
from forkcast_features.cutover import activate, rollback
from forkcast_features.loader import load_version
from forkcast_features.settings import FeatureStoreSettings
from forkcast_features.source import SourceData, read_source
from forkcast_features.updates import update_restaurant
from forkcast_features.verify import verify_version
from forkcast_inference.cluster_features import ClusterFeatureReader, connect_cluster
from forkcast_inference.features import NoLiveVersionError, VersionState

pytestmark = pytest.mark.slow
PREFIX = "cut"
IDS = np.arange(40, dtype=np.int64)
USERS = list(range(0, 600, 7))  # users on every master


def _expected(src: SourceData) -> tuple[dict[int, bytes], dict[int, bytes]]:
    u, r = src.users, src.restaurants
    users = pack_users(u.features)
    rests = pack_restaurants(r.latitude, r.longitude, r.features)
    by_user = {int(i): users[k * USER_VALUE_BYTES : (k + 1) * USER_VALUE_BYTES] for k, i in enumerate(u.ids)}
    by_rest = {
        int(i): rests[k * RESTAURANT_VALUE_BYTES : (k + 1) * RESTAURANT_VALUE_BYTES]
        for k, i in enumerate(r.ids)
    }
    return by_user, by_rest


@pytest.fixture(scope="module")
def second_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny dataset with another seed: every value differs from the first one's, so a mix would show."""
    out = tmp_path_factory.mktemp("tiny-seed8") / "data"
    generate(
        GenerateRequest(out=out, preset="tiny", sizes=preset_sizes("tiny"), seed=8, progress=False),
        log=lambda _m: None,
    )
    return out


def test_a_reader_never_mixes_versions_while_the_live_version_flips(
    redis_cluster: RedisCluster, tiny_data: Path, second_dataset: Path
) -> None:
    for node in redis_cluster.nodes:
        redis.Redis(port=node.port).flushall()
    admin = connect(FeatureStoreSettings(redis_url=redis_cluster.url, redis_cluster=True))
    expected = {}
    for data in (tiny_data, second_dataset):
        src = read_source(data)
        version = load_version(admin, src, prefix=PREFIX, progress=False).version
        verify_version(admin, src, prefix=PREFIX, version=version, sample=200)
        expected[version] = _expected(src)
    first, second = list(expected)
    assert expected[first][1][3] != expected[second][1][3]
    activate(admin, PREFIX, first)

    reader = ClusterFeatureReader(connect_cluster(redis_cluster.nodes[1].url, 2.0), PREFIX)
    reader.current()
    seen: dict[str, int] = {}
    problems: list[str] = []
    refused: list[int] = []
    stop = threading.Event()

    async def read() -> None:
        def select(_state: VersionState) -> np.ndarray:
            return IDS

        k = 0
        while not stop.is_set():
            user = USERS[k % len(USERS)]
            k += 1
            try:
                got = await reader.fetch(user, select)
            except NoLiveVersionError:  # flipped under every attempt: the request fails (503), it never mixes
                refused.append(user)
                continue
            users, rests = expected[got.version]
            seen[got.version] = seen.get(got.version, 0) + 1
            if got.user is None or got.user.tobytes() != users[user]:
                problems.append(f"user {user} under {got.version}")
            problems.extend(
                f"restaurant {i} under {got.version}"
                for i, v in zip(got.ids.tolist(), got.values, strict=True)
                if v != rests[i]
            )

    def reads() -> int:
        return sum(seen.values()) + len(refused)

    def after_some_reads() -> None:
        # Each flip waits for a few reads: on a starved CI machine the flips ran before the reader's thread had
        # started its loop, and it read one version only (what the test checks needs reads between flips).
        start = reads()
        wait_until(
            lambda: reads() >= start + 3 or not worker.is_alive(), timeout_s=30, what="reads between flips"
        )

    worker = threading.Thread(target=asyncio.run, args=(read(),))
    worker.start()
    try:
        for _ in range(15):
            activate(admin, PREFIX, second)
            after_some_reads()
            rollback(admin, PREFIX)
            after_some_reads()
    finally:
        stop.set()
        worker.join()
    assert not problems, problems[:5]
    assert seen.get(first, 0) > 0 and seen.get(second, 0) > 0, seen
    assert len(refused) < sum(seen.values()), (len(refused), seen)

    # A live update reaches every copy: the user on each master reads the new coordinates.
    update_restaurant(admin, PREFIX, 3, 13.5, 100.5, [0.25] * 10)
    for user in USERS[:12]:
        got = asyncio.run(reader.fetch(user, lambda _s: np.array([3], dtype=np.int64)))
        assert got.values[0] is not None and got.values[0][:4] == np.int32(135_000_000).tobytes(), user
        assert reader.state is not None and reader.state.lat[3] == 13.5
