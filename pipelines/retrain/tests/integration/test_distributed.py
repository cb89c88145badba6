"""Data-parallel training under torchrun (2 local processes, gloo) matches a single process's quality."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from forkcast_contract.model_format import METRICS_FILE, TRAIN_LOG_FILE
from forkcast_retrain.evaluate import run_evaluate
from forkcast_retrain.prep import run_prep
from forkcast_retrain.recipes import RECIPES
from forkcast_retrain.train import TrainOptions, run_train


@pytest.mark.slow
def test_two_process_torchrun_matches_single_process(tiny_data: Path, tmp_path: Path) -> None:
    single, parallel = tmp_path / "single", tmp_path / "parallel"
    for run in (single, parallel):
        run_prep(tiny_data, run)
    recipe = RECIPES["default"].with_overrides(epochs=2)
    run_train(single, TrainOptions(recipe=recipe, progress=False, threads=1), log=lambda _: None)
    reference = run_evaluate(single, log=lambda _: None)

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "forkcast_retrain.cli", "train", "--out", str(parallel), "--epochs", "2", "--no-progress"]
    cmd += ["--batch-size", str(recipe.batch_size // 2)]  # per rank: the same global batch and step count
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "epoch 2/2" in done.stdout

    log = [json.loads(line) for line in (parallel / TRAIN_LOG_FILE).read_text().splitlines()]
    assert [e["rows"] for e in log] == [200_000, 200_000]  # the ranks together used every row once per epoch
    summary = json.loads((parallel / "train.json").read_text())
    assert summary["world_size"] == 2
    result = run_evaluate(parallel, log=lambda _: None)
    assert json.loads((parallel / METRICS_FILE).read_text())["hyperparameters"]["world_size"] == 2
    # Same global batch, other row order (files sharded by rank): equal quality up to the shuffle's noise.
    assert abs(result["accuracy"] - reference["accuracy"]) <= 0.01
    assert abs(result["roc_auc"] - reference["roc_auc"]) <= 0.005
    assert result["accuracy"] > 0.93
