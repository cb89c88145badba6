"""prep -> train -> evaluate through the CLI on tiny data: artifacts, every row used, resume, NaN abort."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from forkcast_contract.model_format import (
    METRICS_FILE,
    MODEL_FILE,
    REQUIRED_METRICS,
    SCALER_FILE,
    TRAIN_LOG_FILE,
)
from forkcast_retrain.checkpoint import checkpoint_path, list_checkpoints, load_checkpoint
from forkcast_retrain.cli import main
from forkcast_retrain.errors import DataError, TrainingAbortedError
from forkcast_retrain.evaluate import run_evaluate
from forkcast_retrain.fastpath import fast_forward
from forkcast_retrain.model import RankNet
from forkcast_retrain.prep import run_prep
from forkcast_retrain.recipes import RECIPES
from forkcast_retrain.train import NAN_BATCH_FILE, TrainOptions, run_train


def test_all_leaves_a_complete_run(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert (
        main(
            [
                "all",
                "--data",
                str(tiny_data),
                "--out",
                str(run),
                "--epochs",
                "3",
                "--no-progress",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "epoch 3/3 loss=" in out and "rows=200,000 time=" in out

    metrics = json.loads((run / METRICS_FILE).read_text())
    for key in REQUIRED_METRICS:
        assert key in metrics
    assert metrics["accuracy"] > 0.93 and metrics["roc_auc"] > 0.98  # Bayes-optimal is ~0.957 on this data
    assert metrics["rows"] == {"train": 200_000, "test": 50_000}
    assert metrics["data_fingerprint"] == json.loads((tiny_data / "dataset.json").read_text())["fingerprint"]
    assert metrics["hyperparameters"]["batch_size"] == RECIPES["default"].batch_size
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3]
    assert all("test_roc_auc" in e for e in metrics["epochs"])

    log = [json.loads(line) for line in (run / TRAIN_LOG_FILE).read_text().splitlines()]
    assert [e["rows"] for e in log] == [200_000] * 3  # every row, every epoch

    scaler = np.load(run / SCALER_FILE)
    assert scaler["mean"].shape == scaler["std"].shape == (40,)
    scripted = torch.jit.load(str(run / MODEL_FILE))
    model = RankNet()
    model.load_state_dict(load_checkpoint(list_checkpoints(run)[-1])["model"])
    x = torch.randn(100, 40)
    with torch.no_grad():
        assert torch.allclose(scripted(x), fast_forward(model, x), atol=1e-5)


def test_interrupted_run_resumes_to_the_same_model(tiny_data: Path, tmp_path: Path) -> None:
    """Two epochs, then a third in a new process-like call, equals three epochs straight (seeded shuffles)."""
    recipe = RECIPES["default"].with_overrides(batch_size=8192)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    for run in (straight, resumed):
        run_prep(tiny_data, run)
    run_train(
        straight,
        TrainOptions(recipe=recipe.with_overrides(epochs=3), progress=False, threads=1),
        log=lambda _: None,
    )
    run_train(
        resumed,
        TrainOptions(recipe=recipe.with_overrides(epochs=2), progress=False, threads=1),
        log=lambda _: None,
    )
    lines: list[str] = []
    run_train(
        resumed,
        TrainOptions(recipe=recipe.with_overrides(epochs=3), progress=False, threads=1),
        log=lines.append,
    )
    assert any(line.startswith("resuming after epoch 2") for line in lines)
    a = load_checkpoint(list_checkpoints(straight)[-1])["model"]
    b = load_checkpoint(list_checkpoints(resumed)[-1])["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert len((resumed / TRAIN_LOG_FILE).read_text().splitlines()) == 3


def test_checkpoints_of_another_recipe_are_refused(tiny_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run_prep(tiny_data, run)
    recipe = RECIPES["default"].with_overrides(epochs=1, batch_size=16384)
    run_train(run, TrainOptions(recipe=recipe, progress=False, threads=1), log=lambda _: None)
    other = recipe.with_overrides(lr=1e-4, epochs=2)
    assert (
        main(
            [
                "train",
                "--out",
                str(run),
                "--lr",
                "1e-4",
                "--epochs",
                "2",
                "--batch-size",
                "16384",
                "--threads",
                "1",
            ]
        )
        == 2
    )
    run_train(run, TrainOptions(recipe=other, progress=False, threads=1, restart=True), log=lambda _: None)
    assert load_checkpoint(list_checkpoints(run)[-1])["recipe"]["lr"] == 1e-4


def test_non_finite_loss_aborts_with_the_batch(micro_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run_prep(micro_data, run)
    # lr 1e30 throws the weights to ~1e30 after one step, so the next batch's logits overflow to inf/NaN.
    recipe = RECIPES["default"].with_overrides(epochs=1, batch_size=256, lr=1e30)
    with pytest.raises(TrainingAbortedError, match="non-finite"):
        run_train(run, TrainOptions(recipe=recipe, progress=False, threads=1), log=lambda _: None)
    saved = torch.load(run / NAN_BATCH_FILE, weights_only=True)
    assert saved["x"].shape[1] == 40 and len(saved["y"]) == len(saved["x"])
    assert not list_checkpoints(run)  # no epoch completed, nothing to resume from or publish


def test_autograd_flag_trains_the_same_model(micro_data: Path, tmp_path: Path) -> None:
    """``--autograd`` (the baseline) and the fast path, one epoch from the same seed on the same rows."""
    results = {}
    for flag in ([], ["--autograd"]):
        run = tmp_path / ("autograd" if flag else "fast")
        args = ["all", "--data", str(micro_data), "--out", str(run), "--epochs", "1", "--batch-size", "256"]
        assert main([*args, "--no-progress", "--threads", "1", *flag]) == 0
        assert json.loads((run / "train.json").read_text())["fast_path"] is not bool(flag)
        results[bool(flag)] = json.loads((run / METRICS_FILE).read_text())
    # 47 Adam steps at lr 1e-3: the loss curves agree (test_fastpath); so do the resulting test metrics.
    assert abs(results[True]["logloss"] - results[False]["logloss"]) < 1e-3
    assert abs(results[True]["accuracy"] - results[False]["accuracy"]) < 2e-3


def test_a_run_resumed_with_fewer_epochs_records_the_epochs_trained(micro_data: Path, tmp_path: Path) -> None:
    """Two epochs trained, then `train --epochs 1` on the same run: nothing more is trained, the model is epoch 2's,
    and metrics.json says 2 (it said 1, the number asked for, before)."""
    run = tmp_path / "run"
    run_prep(micro_data, run)
    recipe = RECIPES["default"].with_overrides(batch_size=1024)
    for epochs in (2, 1):
        opts = TrainOptions(recipe=recipe.with_overrides(epochs=epochs), progress=False, threads=1)
        run_train(run, opts, log=lambda _: None)
    metrics = run_evaluate(run, log=lambda _: None)
    assert metrics["hyperparameters"]["epochs"] == 2 == len(metrics["epochs"])
    assert metrics["hyperparameters"]["epochs_requested"] == 1
    assert json.loads((run / METRICS_FILE).read_text())["hyperparameters"]["epochs"] == 2


class _Planted:
    """A pickled object that runs code when unpickled (here: creates a marker file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.touch, (self.marker,))


def test_a_planted_checkpoint_is_refused_without_running_it(micro_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run_prep(micro_data, run)
    marker = tmp_path / "ran"
    path = checkpoint_path(run, 1)
    path.parent.mkdir(parents=True)
    torch.save({"epoch": 1, "payload": _Planted(marker)}, path)
    recipe = RECIPES["default"].with_overrides(epochs=2, batch_size=1024)
    with pytest.raises(DataError, match="refused without running them"):
        run_train(run, TrainOptions(recipe=recipe, progress=False, threads=1), log=lambda _: None)
    assert not marker.exists()
    # Twin: the unrestricted load the trainer used to do runs the planted code.
    torch.load(path, weights_only=False)
    assert marker.exists()
