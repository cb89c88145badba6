"""The end-to-end drill (drills/end_to_end.py) on the platform of the rendered local overlay, tiny preset: every
stage in order, the alert fired once for the served version, the trigger's inputs recorded as CI records them, the
retrain on the training table of the traffic the platform served (from the lake), the canary of the rendered Rollout
promoted, the new version's online AUC above the old one's on the drifted traffic, the job's online AUC equal to the
lake's recomputation, and no client request failed. Only the time scale is compressed (AUC window 20 s, rules'
``for:`` 3 s, Rollout x30)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from forkcast_local.drills import end_to_end as e2e

# The loop's stages, in the order they must happen (other stages may come between them).
ORDER = [
    "platform up (manifests/overlays/local)",
    "serving",
    "online AUC steady (pre-drift)",
    "drift injected",
    "AUC drop visible in the window",
    f"{e2e.ALERT} firing (Prometheus)",
    "GitLab trigger received",
    "training table from the served log",
    "retrain: prep",
    "retrain: train",
    "retrain: evaluate",
    "retrain: gate",
    "retrain: publish",
    "retrain: promote",
    "canary rehearsal of the release commit",
    "canary at 100 % (promoted)",
    "platform inference on the promoted release",
    "online AUC recovered",
    "lake check: the job's window empty, burst starts",
    "lake check: online AUC recomputed from the lake",
    "models scored on the served log's held-out pairs",
]
# The drill's retrain-to-100 % bound here is the product target, the drill's default (--retrain-target-s 300): it
# took 153-194 s on quiet machines and 157 s in a fresh-clone `make test` with a busy loop beside it (2026-12-05).
RETRAIN_TARGET_S = 300
# AUC window 20 s, not 10: the lake check reads the job until 1.5 s before the window's horizon, which leaves a
# starved job up to ~13 s after the 5 s burst to hold every pair of it (window 10: ~5 s after a 3.3 s burst).
TINY = ["--window-s", "20", "--for-s", "3", "--min-samples", "300", "--time-scale", "30", "--rate", "30",
        "--timeout-s", "300"]  # fmt: skip


def test_the_whole_loop_on_the_platform(cache: Path, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    e2e.add_arguments(parser)
    code = e2e.run(parser.parse_args(["--work", str(tmp_path / "drill"), "--cache", str(cache), *TINY]))
    (work,) = (tmp_path / "drill").iterdir()
    report = json.loads((work / "report.json").read_text())
    assert code == 0 and report["ok"], (report.get("error"), report.get("checks"))
    names = [s["stage"] for s in report["stages"]]
    assert [n for n in names if n in ORDER] == ORDER, names

    v1, v2 = report["versions"]["before"], report["versions"]["after"]
    assert v1 != v2
    assert report["alert_episodes"] == {v1: 1}, "the alert fired once, for the served version"
    assert report["triggers"] == 1 and report["gitlab_refused"] == []
    # The pipeline's trigger.json is what CI's .records-trigger writes from the receiver's inputs.
    trigger = json.loads((work / "runs" / "retrain" / "trigger.json").read_text())
    assert trigger["CI_PIPELINE_SOURCE"] == "trigger" and trigger["alert_name"] == e2e.ALERT
    assert trigger["alert_reason"] and trigger["CI_PIPELINE_URL"].endswith("/-/pipelines/1")
    retrain = report["retrain"]
    assert retrain["gate_passed"] and retrain["overlay_changed"] and retrain["version"] == v2
    # The gate passed at once, with CI's call (drift, if any, allowed because the alert asked for the run).
    assert retrain["gate_ci"]["passed"] and retrain["gate_ci"]["failed_checks"] == [], retrain
    release = work / "platform" / "gitops" / "manifests" / "overlays" / "local" / "model-release.yaml"
    assert yaml.safe_load(release.read_text())["data"]["FORKCAST_MODEL_VERSION"] == v2
    rollout = report["rollout"]
    assert (rollout["phase"], rollout["weight"], rollout["verdict"]) == ("Healthy", 100, None)
    assert set(rollout["served"]) == {v1, v2}, "the canary served beside the stable during the update"

    auc = report["auc"]
    assert auc["pre_drift"] - auc["drifted"] >= 0.05
    # The version retrained on the log beats the served one on the drifted world, online: the served one's AUC on
    # the very traffic the table holds (recomputed from the lake) against the new one's after the roll.
    assert auc["recovered"] >= auc["served_on_drifted"] + auc["min_gain"], auc
    assert report["client"]["failed"] == 0 and report["client"]["sent"] > 0
    assert report["client"]["phases"][-1]["versions"].get(v2, 0) > 0
    assert report["retrain_target_s"] == RETRAIN_TARGET_S  # the drill's default is the product target
    assert report["retrain_to_100_s"] <= RETRAIN_TARGET_S
    assert (work / "report.md").read_text().startswith("# End-to-end drill: PASSED")

    # Retrained on the served log: the pipeline's data is the training table of the drifted traffic, built after
    # the drift from the lake's tables, in the trainer's layout (both splits hold rows).
    table = report["training_table"]
    assert report["retrain_data"] == table["out"] and table["preset"] == "served-log", table
    assert table["since"] > report["stages"][names.index("drift injected")]["unix"]
    assert table["rows"]["train"] > 0 and table["rows"]["test"] > 0
    prep = json.loads((work / "runs" / "retrain" / "prep" / "prep.json").read_text())
    assert prep["data_fingerprint"] == table["fingerprint"], "prep read the training table"
    # The same traffic, three models: the one retrained on the log beats the stale one it replaced.
    same = report["same_traffic"]
    assert set(same) == {
        "served (before)",
        "retrained on the served log",
        "trained on a generated drifted dataset",
    }
    assert same["retrained on the served log"]["roc_auc"] > same["served (before)"]["roc_auc"], same

    # The job's online AUC of the new version equals the lake's recomputation: the same pairs, to 1e-9.
    lake = report["lake_check"]
    assert lake["version"] == v2 and lake["job"]["samples"] >= 300, lake
    for count in ("samples", "positives", "excluded"):
        assert lake["job"][count] == lake["lake"][count], (count, lake)
    assert abs(lake["job"]["auc"] - lake["lake"]["auc"]) <= 1e-9, lake
