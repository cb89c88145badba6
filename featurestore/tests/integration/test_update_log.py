"""`forkcast-features update-user|update-restaurant` log each applied update to the feature-updates stream of the
events Redis (the lake's served log), with the values as stored; a refused update logs nothing."""

from __future__ import annotations

import getpass
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import redis

from forkcast_contract.feature_store import FeatureKeys, unpack_restaurants
from forkcast_contract.streams import FEATURE_UPDATE_FIELDS, FEATURE_UPDATES_STREAM
from forkcast_devservers.servers import RedisServer
from forkcast_features.cli import main
from forkcast_features.cutover import activate
from forkcast_features.loader import load_version
from forkcast_features.source import read_source
from forkcast_features.verify import verify_version


@pytest.fixture
def live(tiny_data: Path, client: redis.Redis) -> str:
    src = read_source(tiny_data)
    version = load_version(client, src, prefix="fc", progress=False).version
    verify_version(client, src, prefix="fc", version=version, sample=100)
    activate(client, "fc", version)
    return version


def test_cli_updates_are_logged_to_the_events_redis_after_the_write(
    live: str,
    client: redis.Redis,
    redis_url: str,
    redis_server_factory: Callable[..., RedisServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events = redis_server_factory()
    monkeypatch.setenv("FORKCAST_ENVIRONMENT", "local")
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("FORKCAST_EVENTS_REDIS_URL", events.url)
    monkeypatch.setenv("FORKCAST_FEATURE_PREFIX", "fc")
    features = [i / 7 for i in range(10)]
    argv = ["update-restaurant", "5", "--lat", "13.75000004", "--lng", "100.5", *map(str, features)]
    assert main(argv) == 0
    assert main(["update-user", "999999999", *["0.5"] * 30]) == 2  # unknown user: rejected, not logged

    log = redis.Redis.from_url(events.url)
    entries = log.xrange(FEATURE_UPDATES_STREAM)
    assert len(entries) == 1, "exactly the applied update is logged"
    fields = {k.decode(): v.decode() for k, v in entries[0][1].items()}
    assert list(fields) == list(FEATURE_UPDATE_FIELDS)
    assert (fields["entity"], fields["id"], fields["fv"]) == ("restaurant", "5", live)
    assert fields["actor"] == f"cli:{getpass.getuser()}"
    stored = unpack_restaurants([client.get(FeatureKeys("fc", live).restaurant(5)) or b""])
    # The logged values are the stored ones: float32 features, coordinates quantised to 1e-7 degree.
    np.testing.assert_array_equal(np.float32(json.loads(fields["features"])), stored.features[0])
    assert float(fields["latitude"]) == float(stored.latitude[0]) != 13.75000004
    assert not client.exists(FEATURE_UPDATES_STREAM), "the log went to the features Redis"


@pytest.mark.parametrize("events_url", [None, "same"], ids=["events-url-unset", "events-url-is-features-url"])
def test_outside_local_an_update_that_could_not_be_logged_is_refused_before_the_write(
    live: str,
    client: redis.Redis,
    redis_url: str,
    events_url: str | None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("FORKCAST_ENVIRONMENT", "production")
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.delenv("FORKCAST_EVENTS_REDIS_URL", raising=False)
    if events_url == "same":
        monkeypatch.setenv("FORKCAST_EVENTS_REDIS_URL", redis_url)
    monkeypatch.setenv("FORKCAST_FEATURE_PREFIX", "fc")
    key = FeatureKeys("fc", live).user(3)
    before = client.get(key)
    assert main(["update-user", "3", *["0.5"] * 30]) == 2  # rejected: nothing written
    err = capsys.readouterr().err
    reason = "unset" if events_url is None else "the features Redis (REDIS_URL)"
    assert f"FORKCAST_EVENTS_REDIS_URL is {reason} in environment=production" in err
    assert "nothing was written" in err
    assert client.get(key) == before, "the refused update was written"
    assert not client.exists(FEATURE_UPDATES_STREAM)


def test_an_update_whose_log_fails_after_the_write_says_applied_but_not_logged(
    live: str,
    client: redis.Redis,
    redis_url: str,
    redis_server_factory: Callable[..., RedisServer],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    events = redis_server_factory()
    # The events Redis refuses the append as the cluster's would for a user without +xadd on the stream.
    redis.Redis.from_url(events.url).acl_setuser(
        "default", enabled=True, nopass=True, commands=["+@all", "-xadd"], keys=["*"]
    )
    monkeypatch.setenv("FORKCAST_ENVIRONMENT", "production")
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("FORKCAST_EVENTS_REDIS_URL", events.url)
    monkeypatch.setenv("FORKCAST_FEATURE_PREFIX", "fc")
    assert main(["update-user", "3", *["0.5"] * 30]) == 3
    err = capsys.readouterr().err
    assert f"user 3 updated in {live}: applied but not logged; resend" in err
    assert f"appending to {FEATURE_UPDATES_STREAM} failed" in err and "xadd" in err.lower()
    stored = client.get(FeatureKeys("fc", live).user(3))
    assert stored is not None and np.frombuffer(stored, dtype=np.float32)[0] == 0.5  # the write did happen
