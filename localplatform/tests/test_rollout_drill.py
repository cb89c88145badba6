"""The rollout drill end to end on tiny data (a good canary promoted, a slow one aborted), and its manifest reader.

Real processes throughout (Redis, two inference services, gateways, online-AUC job, Prometheus); only the time
scale is compressed (x120), so each run takes well under a minute.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import inference_support as support
import pytest

from forkcast_local.rollout_drill import main
from forkcast_local.rollout_spec import SpecError, evaluate, load

TINY = ["--time-scale", "120", "--arg", "min-requests=20", "--arg", "min-samples=200", "--max-seconds", "120"]


def test_conditions_of_the_templates() -> None:
    cond = "len(result) > 0 && result[0] <= 0.01"
    assert evaluate(cond, [0.005]) and not evaluate(cond, [0.02]) and not evaluate(cond, [])
    assert evaluate("len(result) == 0 || isNaN(result[0])", [float("nan")])
    with pytest.raises(SpecError, match="outside the supported subset"):
        evaluate("result[0] <= 0.01 && __import__('os')", [0.0])
    with pytest.raises(SpecError, match="mixes"):
        evaluate("len(result) > 0 && result[0] < 1 || len(result) == 0", [])


def test_reads_the_shipped_rollout() -> None:
    canary = load()
    kinds = [s.kind for s in canary.steps]
    assert kinds[0] == "setWeight" and "analysis" in kinds and canary.steps[-1].weight == 100
    assert set(canary.background) == {"inference-error-ratio", "inference-p95-latency"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("drill")
    data = support.generate_tiny(root / "data")
    (root / "stable").mkdir()
    stable = support.train_tiny_model(data, root / "run", root / "stable")
    canary = shutil.copytree(stable, root / "canary")
    return data, stable, canary


def _argv(tiny: tuple[Path, Path, Path], out: Path) -> list[str]:
    data, stable, canary = tiny
    return [
        "--data",
        str(data),
        "--stable-model",
        str(stable),
        "--canary-model",
        str(canary),
        "--report",
        str(out),
    ]


def test_good_canary_is_promoted(tiny: tuple[Path, Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    assert main([*_argv(tiny, out), *TINY, "--expect", "Promoted"]) == 0
    report = json.loads(out.read_text())
    assert report["outcome"] == "Promoted" and report["client"]["failed"] == 0
    assert [s["kind"] for s in report["steps"]] == [s.kind for s in load().steps]


def test_slow_canary_is_aborted(tiny: tuple[Path, Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    assert main([*_argv(tiny, out), "--latency-ms", "60", *TINY, "--expect", "Aborted"]) == 0
    report = json.loads(out.read_text())
    assert report["outcome"] == "Aborted" and "p95-latency" in report["verdict"]
    assert report["client"]["failed"] == 0 and report["client"]["sent"] > 0
    assert 0 < report["time_to_rollback_s"] < 30
