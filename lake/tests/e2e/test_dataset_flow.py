"""Issue 16's first "Done means": `forkcast-data generate --preset tiny --out s3://…`, then `forkcast-retrain all
--data s3://…` and `forkcast-features load --data s3://… --activate`, each a real console script against weed mini
and redis-server; prep.json and the feature version record the snapshot (URI + version) they read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from forkcast_contract.feature_store import VersionMeta
from forkcast_devservers.servers import RedisServer, Seaweed
from forkcast_features.versions import list_versions

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow  # about 40 s: three console scripts, one training epoch on the tiny preset


def _run(name: str, *args: str, env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(
        [str(BIN / name), *args], env=env, cwd=cwd, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"{name} {' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_generate_to_s3_then_train_and_load_features_from_it(
    seaweed: Seaweed, redis_server: RedisServer, tmp_path: Path
) -> None:
    uri = "s3://lake-e2e/datasets/tiny"
    prefix = "fc-lake-e2e"
    env = {
        **os.environ,
        **seaweed.client_env("lake-e2e"),
        "FORKCAST_ENVIRONMENT": "local",
        "FORKCAST_DATASET_CACHE": str(tmp_path / "cache"),
        "REDIS_URL": redis_server.url,
        "FORKCAST_FEATURE_PREFIX": prefix,
        "OPENBLAS_NUM_THREADS": "1",
    }
    out = _run(
        "forkcast-data", "generate", "--preset", "tiny", "--out", uri, "--no-progress", env=env, cwd=tmp_path
    )
    assert f"published {uri} version 0" in out
    assert not (tmp_path / "s3:").exists()  # before: a Path-typed --out wrote a local folder named "s3:"

    run = tmp_path / "run"
    _run("forkcast-retrain", "all", "--data", uri, "--out", str(run), "--epochs", "1", "--no-progress",
         "--threads", "1", env=env, cwd=tmp_path)  # fmt: skip
    prep = json.loads((run / "prep" / "prep.json").read_text())
    snapshot = prep["data_snapshot"]
    assert (snapshot["uri"], snapshot["version"]) == (uri, 0)
    assert snapshot["fingerprint"] == prep["data_fingerprint"]
    assert set(snapshot["tables"]) == {"users", "restaurants", "train", "test", "requests"}
    assert (run / "metrics.json").is_file()

    out = _run(
        "forkcast-features", "load", "--data", uri, "--activate", "--no-progress", env=env, cwd=tmp_path
    )
    assert f"source: {uri} version 0" in out
    client = redis.Redis.from_url(redis_server.url)
    metas: list[VersionMeta] = list_versions(client, prefix)
    assert len(metas) == 1 and metas[0].activated_at  # loaded, verified and switched live
    assert json.loads(metas[0].source_snapshot) == snapshot
    check = _run("forkcast-features", "check", "--data", uri, "--data-version", "0", env=env, cwd=tmp_path)
    assert ", 0 differences" in check, check
