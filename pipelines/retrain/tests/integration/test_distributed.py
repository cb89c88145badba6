"""Data-parallel training under torchrun (gloo): 2 local processes match a single process's quality, and the
Workflow's per-pod command (static rendezvous on node 0) trains with two agents."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from forkcast_contract.model_format import METRICS_FILE, TRAIN_LOG_FILE
from forkcast_devservers.ports import free_port
from forkcast_retrain import workflow_torchrun as torchrun
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


@pytest.mark.slow
def test_two_agents_with_the_workflow_pods_command_train_together_and_pod_0_keeps_the_run(
    micro_data: Path, tmp_path: Path
) -> None:
    """The training pods' torchrun command (forkcast_retrain.workflow_torchrun.launcher) run as two agents, one per
    "pod" with its own copy of prep's run directory, pod 0's DNS name being this machine's loopback: they meet,
    train on every row together, and the run directory of node 0 is the one rank 0 wrote (the one the Workflow
    keeps); node 1's holds none of rank 0's outputs."""
    prepared = tmp_path / "prepared"
    run_prep(micro_data, prepared)
    port = free_port()
    substitutions = {
        "{{workflow.parameters.train_nodes}}": "2",  # what Argo substitutes for each pod
        "{{workflow.uid}}": "test-uid",
        torchrun.endpoint(): f"127.0.0.1:{port}",
    }
    agents, runs = [], []
    for node in ("0", "1"):
        run = tmp_path / f"pod{node}"
        shutil.copytree(prepared, run)
        runs.append(run)
        launcher = [substitutions.get(a, a) for a in torchrun.launcher(node)]
        call = ["train", "--out", str(run), "--epochs", "1", "--no-progress", "--threads", "1"]
        agents.append(
            subprocess.Popen(
                [str(Path(sys.executable).parent / launcher[0]), *launcher[1:], *call],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"},
            )
        )
    outputs = [agent.communicate(timeout=300) for agent in agents]
    assert [agent.returncode for agent in agents] == [0, 0], [err[-2000:] for _, err in outputs]
    summary = json.loads((runs[0] / "train.json").read_text())
    assert summary["world_size"] == 2
    assert [e["rows"] for e in summary["epochs"]] == [12_000]  # both pods' shards (3 files): every row once
    assert (runs[0] / "scaler.npz").is_file()  # rank 0's outputs, written in node 0's run directory only
    assert not (runs[1] / "train.json").exists() and not (runs[1] / "scaler.npz").exists()
