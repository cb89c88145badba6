"""The training benchmark (pipelines/retrain/benchmarks/, outside the package) runs on the tiny preset: the step
comparison of both code paths at both recipes' batch sizes, then one 1-epoch full run of the default recipe
(``forkcast-retrain all`` in a child process) with its epoch time over the step-only time, all in its JSON report.
The original recipe's full run is left out: it would add half a minute and test nothing more."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from forkcast_retrain.prep import run_prep
from forkcast_retrain.recipes import RECIPES

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
    step_only_s = 200_000 / results["steps"][f"batch_{RECIPES['default'].batch_size}"]["fast"]
    assert full["epoch_vs_step_only"] == [round(epoch_s / step_only_s, 3)]
    assert "default: epoch time / step-only time [" in done.stdout


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
