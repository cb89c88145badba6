"""The training benchmark (pipelines/retrain/benchmarks/, outside the package) runs on the tiny preset: the step
comparison of both code paths at both recipes' batch sizes, one epoch with step-only segments interleaved (its
epoch time over the step-only time of the same rows), then one 1-epoch full run of the default recipe
(``forkcast-retrain all`` in a child process), all in its JSON report. The original recipe's full run is left
out: it would add half a minute and test nothing more. The interleaved feed itself is checked to leave training
untouched: same batches, same model as the trainer's own feed."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from forkcast_retrain.checkpoint import list_checkpoints, load_checkpoint
from forkcast_retrain.prep import run_prep
from forkcast_retrain.recipes import RECIPES
from forkcast_retrain.train import TrainOptions, run_train

BENCH = Path(__file__).parents[2] / "benchmarks" / "bench_train.py"


def test_bench_reports_the_step_rates_and_the_epoch_over_step_only_ratio(
    tiny_data: Path, tmp_path: Path
) -> None:
    report = tmp_path / "bench.json"
    args = ["--data", str(tiny_data), "--out", str(tmp_path / "runs"), "--json", str(report)]
    args += [
        "--threads",
        "1",
        "--step-rows",
        "16384",
        "--rounds",
        "1",
        "--recipes",
        "default",
        "--epochs",
        "1",
    ]
    done = subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(report.read_text())
    assert set(results["steps"]) == {f"batch_{RECIPES[r].batch_size}" for r in ("default", "original")}
    for step in results["steps"].values():
        assert step["fast"] > 0 and step["autograd"] > 0
        assert step["ratio"] == step["fast"] / step["autograd"]
    [full] = results["full"]
    assert full["recipe"] == "default" and full["rows_per_epoch"] == 200_000
    [epoch_s], [step_s] = full["epoch_time_s"], full["epoch_step_s"]
    assert 0 < step_s <= epoch_s  # the steps are part of the epoch
    assert full["epoch_vs_own_steps"] == [round(epoch_s / step_s, 3)]
    [ratio] = results["epoch_vs_step_only"]["epochs"]
    assert ratio["rows"] == 200_000  # every row of the epoch, each with a step-only twin of the same size
    assert 0 < ratio["own_step_s"] <= ratio["epoch_s"] and ratio["step_only_s"] > 0
    # The three figures are each rounded to 3 decimals: the ratio of the rounded times differs from the rounded ratio
    # by at most its own rounding plus what the times' rounding moves it (1.125 against 1.18 / 1.05 = 1.1238 in CI).
    quotient = ratio["epoch_s"] / ratio["step_only_s"]
    slack = 5e-4 + quotient * 5e-4 * (1 / ratio["epoch_s"] + 1 / ratio["step_only_s"])
    assert ratio["ratio"] == pytest.approx(quotient, abs=slack + 1e-9)
    # 4 files of 50,000 rows: 13 batches of <= 4,096 each, a segment every 16 batches; 10 blocks asked, 4 exist
    assert ratio["segments"] == -(-4 * 13 // 16) == len(ratio["block_ratios"])
    assert re.search(
        r"default epoch 1 \(interleaved\): 200,000 rows, .* epoch time / step-only time [\d.]+x", done.stdout
    )
    assert re.search(r"default: 200,000 rows/epoch, .* epoch time / its own train steps \[", done.stdout)


def _epoch_ratio_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("epoch_ratio", BENCH.parent / "epoch_ratio.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_interleaved_step_only_segments_leave_training_untouched(tiny_data: Path, tmp_path: Path) -> None:
    """The epoch the benchmark times is the trainer's own: same batches, same model as without the step-only
    segments (they train a separate model), and the segments cover every row once with the same batch sizes."""
    epoch_ratio = _epoch_ratio_module()
    run_prep(tiny_data, tmp_path / "prep-run")
    measured = epoch_ratio.interleaved_epochs(tmp_path / "prep-run", tmp_path / "interleaved", 2, threads=1)
    assert [e["rows"] for e in measured["epochs"]] == [200_000, 200_000]
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "prep").symlink_to(tmp_path / "prep-run" / "prep", target_is_directory=True)
    recipe = RECIPES["default"].with_overrides(epochs=2)
    run_train(plain, TrainOptions(recipe=recipe, threads=1, progress=False), log=lambda _: None)
    interleaved_model = load_checkpoint(list_checkpoints(tmp_path / "interleaved")[-1])["model"]
    plain_model = load_checkpoint(list_checkpoints(plain)[-1])["model"]
    assert interleaved_model.keys() == plain_model.keys()
    for name, tensor in plain_model.items():
        assert torch.equal(interleaved_model[name], tensor), name


def test_epoch_profile_times_the_three_ways_of_feeding_the_steps(tiny_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run_prep(tiny_data, run)
    cmd = [sys.executable, str(BENCH.parent / "profile_epoch.py"), "--run", str(run), "--files", "1"]
    done = subprocess.run([*cmd, "--rounds", "1"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    found = re.findall(r"([a-z-]+) ([\d.]+) s / steps ([\d.]+) s = ([\d.]+)x", done.stdout)
    assert [name for name, *_ in found] == ["whole-file", "per-batch", "reader-thread"]
    for _, total, steps, ratio in found:
        assert 0 < float(steps) <= float(total)  # a slice's steps are part of it
        # times printed to 0.1 ms (a tiny slice's steps take ~10 ms: 2 decimals once made 1.48x read as 1.25x)
        assert float(ratio) >= 1.0 and float(ratio) == pytest.approx(float(total) / float(steps), rel=0.02)
