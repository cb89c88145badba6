"""The end-to-end drill on the tiny preset (issue 11 item 3, issue 9's detection target): every real component,
only the time scale compressed (AUC window 10 s, rules' ``for:`` 3 s, Rollout ×120), in about three minutes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from forkcast_local.drill import ALERT, main, missing_binaries

pytestmark = pytest.mark.skipif(
    bool(missing_binaries()), reason=f"the drill needs the system binaries {missing_binaries()}"
)
BIN = Path(sys.executable).parent
# The loop's stages, in the order they must happen (other stages may come between them).
ORDER = [
    "serving",
    "client sending requests.parquet through the gateway",
    "online AUC steady (pre-drift)",
    "drift injected",
    "AUC drop visible in the window",
    f"{ALERT} firing (Prometheus)",
    "GitLab trigger received",
    "retrain: prep",
    "retrain: train",
    "retrain: evaluate",
    "retrain: gate",
    "retrain: publish",
    "retrain: promote",
    "feature cutover (drifted features live)",
    "canary started from the promoted overlay",
    "canary at 100 % (promoted)",
    "online AUC recovered",
]
TINY = ["--mlflow", "file", "--window-s", "10", "--for-s", "3", "--min-samples", "300", "--min-requests", "10",
        "--time-scale", "120", "--request-interval-s", "0.02", "--timeout-s", "300"]  # fmt: skip


def test_the_whole_loop_on_tiny_data(tmp_path: Path) -> None:
    data = tmp_path / "data"
    subprocess.run(
        [str(BIN / "forkcast-data"), "generate", "--preset", "tiny", "--out", str(data), "--no-progress"],
        check=True,
        capture_output=True,
    )
    code = main(["--data", str(data), "--work", str(tmp_path / "drill"), *TINY])
    (work,) = (tmp_path / "drill").iterdir()
    report = json.loads((work / "report.json").read_text())
    assert code == 0 and report["ok"], report.get("error")
    names = [s["stage"] for s in report["stages"]]
    assert [n for n in names if n in ORDER] == ORDER, names
    times = [s["unix"] for s in report["stages"]]
    assert times == sorted(times)

    v1, v2 = report["versions"]["before"], report["versions"]["after"]
    assert v1 != v2
    assert report["alert_episodes"] == {v1: 1}, "the alert fired once, for the served version"
    assert report["triggers"] == 1
    assert report["alert"]["firing_delay_s"] <= 120
    retrain = report["retrain"]
    assert retrain["gate_passed"] and retrain["overlay_changed"] and retrain["version"] == v2
    # The gate CI runs passed at once: the drifted data was reported, allowed because the alert asked for the run.
    assert any("triggered by OnlineAucLow" in d for d in retrain["gate_ci"]["drift_allowed"]), retrain[
        "gate_ci"
    ]
    release = work / "gitops" / "manifests" / "overlays" / "dev" / "model-release.yaml"
    assert yaml.safe_load(release.read_text())["data"]["FORKCAST_MODEL_VERSION"] == v2
    rollout = report["rollout"]
    assert rollout["outcome"] == "Promoted" and rollout["verdict"] is None

    auc = report["auc"]
    assert auc["pre_drift"] - auc["drifted"] >= 0.05
    assert auc["recovered"] >= auc["pre_drift"] - auc["tolerance"]
    assert report["client"]["failed"] == 0 and report["client"]["sent"] > 0
    assert report["client"]["versions"].get(v2, 0) > 0
    assert report["retrain_to_100_s"] <= 300
    assert (work / "report.md").read_text().startswith("# End-to-end drill: PASSED")
