"""Live single-entity updates are visible to the next read; the consistency check finds drift and only drift."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import redis

from forkcast_contract.feature_store import FeatureKeys, unpack_restaurants, unpack_users
from forkcast_features.check import check_consistency
from forkcast_features.cli import main
from forkcast_features.cutover import activate
from forkcast_features.loader import load_version
from forkcast_features.reader import read_request
from forkcast_features.source import read_source
from forkcast_features.updates import UpdateError, update_restaurant, update_user
from forkcast_features.verify import verify_version


@pytest.fixture
def live(tiny_data: Path, client: redis.Redis) -> str:
    src = read_source(tiny_data)
    version = load_version(client, src, prefix="fc", progress=False).version
    verify_version(client, src, prefix="fc", version=version, sample=100)
    activate(client, "fc", version)
    return version


def test_user_update_is_visible_to_the_next_request(live: str, client: redis.Redis) -> None:
    new = [float(i) / 7 for i in range(30)]
    assert update_user(client, "fc", 42, new) == live
    got = read_request(client, "fc", 42, [])
    assert got.user is not None
    np.testing.assert_array_equal(unpack_users([got.user])[0], np.float32(new))


def test_restaurant_update_bumps_the_revision(live: str, client: redis.Redis) -> None:
    keys = FeatureKeys("fc", live)
    before = int(client.get(keys.restaurant_revision) or -1)
    update_restaurant(client, "fc", 5, 13.75, 100.5, [1.5] * 10)
    assert int(client.get(keys.restaurant_revision) or -1) == before + 1
    got = unpack_restaurants([read_request(client, "fc", 0, [5]).restaurants[0] or b""])
    assert abs(got.latitude[0] - 13.75) < 1e-7 and abs(got.longitude[0] - 100.5) < 1e-7
    np.testing.assert_array_equal(got.features[0], np.full(10, 1.5, dtype=np.float32))


def test_bad_updates_are_refused_and_write_nothing(live: str, client: redis.Redis) -> None:
    keys = FeatureKeys("fc", live)
    before = client.get(keys.user(1))
    with pytest.raises(UpdateError, match="expected 30"):
        update_user(client, "fc", 1, [0.0] * 29)
    with pytest.raises(UpdateError, match="finite"):
        update_user(client, "fc", 1, [float("nan")] * 30)
    with pytest.raises(UpdateError, match="does not exist"):
        update_user(client, "fc", 10**9, [0.0] * 30)
    with pytest.raises(UpdateError, match="out of range"):
        update_restaurant(client, "fc", 1, 95.0, 100.0, [0.0] * 10)
    assert client.get(keys.user(1)) == before
    assert not client.exists(keys.user(10**9))


def test_check_is_clean_after_load_and_names_every_drift(
    live: str, tiny_data: Path, client: redis.Redis
) -> None:
    clean = check_consistency(client, "fc", tiny_data, sample=20_000, seed=0)
    assert clean.differences == [] and clean.users_checked == 10_000
    keys = FeatureKeys("fc", live)
    update_user(client, "fc", 3, [0.25] * 30)
    # a loader that wrote float16 instead of float32 would look like this: right length, wrong numbers
    wrong = np.frombuffer(client.get(keys.user(8)) or b"", dtype="<f4").astype("<f2").tobytes() * 2
    client.set(keys.user(8), wrong)
    client.delete(keys.restaurant(11))
    report = check_consistency(client, "fc", tiny_data, sample=20_000, seed=0)
    assert any(d.startswith("user 3 f00: offline") for d in report.differences)
    assert any(d.startswith("user 8 f") for d in report.differences)
    assert "restaurant 11: missing online" in report.differences
    assert {d.split()[1] for d in report.differences if d.startswith("user")} == {"3", "8"}


def test_cli_update_and_check(
    live: str,
    tiny_data: Path,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    # One Redis for features and the update log: a laptop's setup, refused outside local (test_update_log.py).
    monkeypatch.setenv("FORKCAST_ENVIRONMENT", "local")
    assert main(["check", "--data", str(tiny_data), "--sample", "200"]) == 0
    assert main(["update-user", "7", *["0.5"] * 30]) == 0
    assert main(["check", "--data", str(tiny_data), "--sample", "20000"]) == 1
    assert "user 7 f00: offline" in capsys.readouterr().out
