"""Loading against a real redis-server: load → verify → activate, idempotent reruns, resume after a crash or an
out-of-memory error, and verification that catches a lost or corrupted value."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from forkcast_contract.feature_store import FeatureKeys, pointer_key
from forkcast_devservers.ports import free_port
from forkcast_features.cli import main
from forkcast_features.cutover import activate
from forkcast_features.loader import LoadError, load_version
from forkcast_features.source import read_source
from forkcast_features.verify import VerifyError, verify_version
from forkcast_features.versions import read_meta


def _data_keys(client: redis.Redis, version: str) -> int:
    return sum(1 for _ in client.scan_iter(match=f"fc:{version}:*", count=1000))


def test_cli_load_verifies_and_activates(
    tiny_data: Path,
    redis_url: str,
    client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    assert main(["load", "--data", str(tiny_data), "--activate", "--no-progress"]) == 0
    out = capsys.readouterr().out
    src = read_source(tiny_data)
    version = client.get("fc:live").decode()  # type: ignore[union-attr]
    assert f"version {version}" in out and "0 mismatches" in out
    meta = read_meta(client, "fc", version)
    assert meta is not None and meta.state == "verified" and meta.activated_at and meta.verified_at
    assert meta.users == meta.users_loaded == len(src.users.ids)
    assert meta.source_fingerprint == src.manifest.fingerprint
    # every user and restaurant key plus the restaurant revision counter, nothing else
    assert _data_keys(client, version) == len(src.users.ids) + len(src.restaurants.ids) + 1
    assert main(["status"]) == 0
    assert f"* {version} verified" in capsys.readouterr().out


def test_rerun_is_idempotent(tiny_data: Path, client: redis.Redis) -> None:
    src = read_source(tiny_data)
    first = load_version(client, src, prefix="fc", progress=False)
    keys_after_first = client.dbsize()
    again = load_version(client, src, prefix="fc", progress=False)
    assert again.version == first.version and again.resumed
    assert again.users_written == again.restaurants_written == 0
    assert client.dbsize() == keys_after_first


def test_killed_loader_leaves_live_untouched_and_rerun_finishes(
    tiny_data: Path, tiny_drifted: Path, redis_url: str, client: redis.Redis
) -> None:
    old = load_version(client, read_source(tiny_drifted), prefix="fc", progress=False)
    verify_version(client, read_source(tiny_drifted), prefix="fc", version=old.version, sample=100)
    activate(client, "fc", old.version)
    env = {**os.environ, "REDIS_URL": redis_url, "FORKCAST_FEATURE_BATCH_ROWS": "10"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "forkcast_features",
            "load",
            "--data",
            str(tiny_data),
            "--activate",
            "--no-progress",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    src = read_source(tiny_data)
    new_version = None
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            metas = [m for m in client.smembers("fc:versions") if m.decode() != old.version]
            if metas:
                new_version = metas[0].decode()
                if int(client.hget(f"fc:meta:{new_version}", "users_loaded") or 0) > 0:
                    os.kill(proc.pid, signal.SIGKILL)
                    break
            time.sleep(0.0005)
    finally:
        proc.wait(timeout=30)
    assert new_version is not None, "the loader never started writing"
    meta = read_meta(client, "fc", new_version)
    assert meta is not None and meta.state == "loading"
    assert 0 < meta.users_loaded < meta.users, "the loader was not stopped mid-load"
    assert client.get(pointer_key("fc")).decode() == old.version  # type: ignore[union-attr]
    with pytest.raises(VerifyError, match="not loaded"):
        verify_version(client, src, prefix="fc", version=new_version, sample=10)

    rerun = load_version(client, src, prefix="fc", progress=False)
    assert rerun.resumed and rerun.version == new_version
    assert rerun.users_written == meta.users - meta.users_loaded
    verify_version(client, src, prefix="fc", version=new_version, sample=500)
    assert _data_keys(client, new_version) == len(src.users.ids) + len(src.restaurants.ids) + 1


def test_out_of_memory_mid_load_is_reported_and_resumable(tiny_data: Path, client: redis.Redis) -> None:
    src = read_source(tiny_data)
    client.set(pointer_key("fc"), "older")
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", str(used + 600_000))  # room for a fraction of the ~2.4 MB of users
    with pytest.raises(LoadError, match="live version is untouched") as err:
        load_version(client, src, prefix="fc", batch_rows=500, progress=False)
    assert "gc --drop" in str(err.value)
    assert client.get(pointer_key("fc")) == b"older"
    (name,) = client.smembers("fc:versions")
    partial = read_meta(client, "fc", name.decode())
    assert partial is not None
    assert partial.state == "loading" and partial.users_loaded < partial.users
    client.config_set("maxmemory", "0")
    done = load_version(client, src, prefix="fc", batch_rows=500, progress=False)
    assert done.resumed and done.version == partial.version
    verify_version(client, src, prefix="fc", version=done.version, sample=1000)


def test_verify_catches_a_missing_key_and_a_changed_byte(tiny_data: Path, client: redis.Redis) -> None:
    src = read_source(tiny_data)
    version = load_version(client, src, prefix="fc", progress=False).version
    keys = FeatureKeys("fc", version)
    client.delete(keys.user(17))
    with pytest.raises(VerifyError, match=r"users 9999/10000"):
        verify_version(client, src, prefix="fc", version=version, sample=0)
    client.set(keys.user(17), b"\x00" * 120)
    # sample everything so the one corrupted value is certainly compared
    with pytest.raises(VerifyError, match=r"user 17 .*bytes differing"):
        verify_version(client, src, prefix="fc", version=version, sample=len(src.users.ids))


def test_redis_unreachable_is_a_clean_error(
    tiny_data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()  # a port nobody listens on
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{port}/0")
    monkeypatch.setenv("FORKCAST_REDIS_TIMEOUT_SECONDS", "0.5")
    assert main(["load", "--data", str(tiny_data), "--no-progress"]) == 1
    assert "Redis" in capsys.readouterr().err
