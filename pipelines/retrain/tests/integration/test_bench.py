"""The training benchmark (pipelines/retrain/benchmarks/, outside the package) runs on the tiny preset: the step
comparison of both code paths at both recipes' batch sizes, written to its JSON report. Its full runs (``forkcast-
retrain all`` of each recipe in a child process) are left out here: they cost a minute even on tiny data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from forkcast_retrain.recipes import RECIPES

BENCH = Path(__file__).parents[2] / "benchmarks" / "bench_train.py"


def test_bench_reports_the_step_rates_of_both_code_paths(tiny_data: Path, tmp_path: Path) -> None:
    report = tmp_path / "bench.json"
    args = ["--data", str(tiny_data), "--out", str(tmp_path / "runs"), "--json", str(report)]
    args += ["--threads", "1", "--step-rows", "16384", "--rounds", "1", "--skip-full"]
    done = subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(report.read_text())
    assert set(results["steps"]) == {f"batch_{RECIPES[r].batch_size}" for r in ("default", "original")}
    for step in results["steps"].values():
        assert step["fast"] > 0 and step["autograd"] > 0
        assert step["ratio"] == step["fast"] / step["autograd"]
    assert "full" not in results
