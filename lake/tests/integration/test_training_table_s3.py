"""The training table against a real SeaweedFS: features time-travelled to the snapshot a feature version was
loaded from, written to the lake as a dataset, and trained on by ``forkcast-retrain all --data s3://…``."""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from forkcast_contract.dataset import USER_FEATURES_FILE, DatasetSizes
from forkcast_contract.feature_store import version_name
from forkcast_contract.features import USER_FEATURES, feature_schema_hash
from forkcast_data.generate import GenerateRequest, generate
from forkcast_devservers.servers import Seaweed
from forkcast_lake.datasets import publish
from forkcast_lake.datasets_read import open_data
from forkcast_lake.pit_features import STATE_STRIDE
from forkcast_lake.pit_testing import LogWriter
from forkcast_lake.settings import get_settings
from forkcast_lake.training_table import training_table

SIZES = DatasetSizes(
    users=200, restaurants=1_100, train_files=1, test_files=1, rows_per_file=500, requests=5, candidates=1_000
)
T0 = 1_800_000_000.0
_buckets = itertools.count()


@pytest.fixture
def bucket(seaweed: Seaweed, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh bucket, with the S3 settings in the environment (this process and the trainer's)."""
    name = f"lake-tt-{next(_buckets)}"
    for key, value in seaweed.client_env(name).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("FORKCAST_ENVIRONMENT", "local")
    get_settings.cache_clear()
    yield f"s3://{name}"
    get_settings.cache_clear()


def test_served_traffic_becomes_a_lake_dataset_the_trainer_trains_on(bucket: str, tmp_path: Path) -> None:
    served_with = generate(GenerateRequest(out=tmp_path / "v0", preset="micro", sizes=SIZES, progress=False))
    later = generate(
        GenerateRequest(out=tmp_path / "v1", preset="micro", sizes=SIZES, drift=0.5, progress=False)
    )
    datasets = f"{bucket}/datasets"
    publish(tmp_path / "v0", datasets)
    publish(
        tmp_path / "v1", datasets
    )  # published after: the users table's latest version is not what was served
    fv = version_name(served_with.fingerprint, feature_schema_hash())
    assert fv != version_name(later.fingerprint, feature_schema_hash())

    rng = random.Random(5)
    log = LogWriter()
    for i in range(300):
        ids = rng.sample(range(SIZES.restaurants), 8)
        log.prediction(f"q{i}", T0 + i, i % SIZES.users, {r: rng.random() for r in ids}, fv=fv)
        for r in ids:
            log.feedback(f"q{i}", r, rng.random() < 0.4, T0 + i + 2)
    log.user_update(0, [0.5] * 30, T0 + 150.5, fv=fv)  # user 0 is served before and after this
    log.feedback(
        "later", 0, False, T0 + 300 + 700
    )  # compacted past until + attribution + skew: labels complete
    log.commit(f"{bucket}/lake", batches=2)

    out = f"{bucket}/training/served"
    written = training_table(f"{bucket}/lake", T0, T0 + 300, out, [datasets])
    assert written.dataset_version == 0 and written.table.pairs == 2_400

    data = open_data(out)  # the published table, downloaded and verified by its sha256s
    users = pl.read_parquet(data.directory / USER_FEATURES_FILE)
    served_users = pl.read_parquet(tmp_path / "v0" / USER_FEATURES_FILE)
    drifted_users = pl.read_parquet(tmp_path / "v1" / USER_FEATURES_FILE)
    base = users.filter(pl.col("user_id") < STATE_STRIDE).sort("user_id")
    expected = served_users.join(base.select("user_id"), on="user_id").sort("user_id")
    assert base.equals(expected)  # the values of the version served, time-travelled past the later publish
    assert not base.equals(drifted_users.join(base.select("user_id"), on="user_id").sort("user_id"))
    assert users.filter(pl.col("user_id") == STATE_STRIDE).select(USER_FEATURES).row(0) == (0.5,) * 30

    run = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "forkcast_retrain.cli", "all", "--data", out, "--out", str(run), "--epochs", "1",
         "--no-progress", "--threads", "1"],
        env=os.environ | {"OPENBLAS_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["roc_auc"] <= 1.0
    assert metrics["rows"]["train"] + metrics["rows"]["test"] == 2_400
