"""Alert OnlineAucStarvedByKeyShare (manifests/observability/prometheus-rules.yaml), with promtool: a deployment whose
labelled traffic comes through too few API keys gets no online AUC at the default FORKCAST_AUC_MAX_KEY_SHARE (one
key: every pair left out), which silently leaves every canary's online-AUC analysis Inconclusive and OnlineAucLow
mute; the alert names it after 30 minutes, and stays quiet while most pairs are used. The series are shaped as the
online-AUC job exports them (monitoring/tests/integration/test_key_share.py checks the exposition: labels
model_version, window, reason). The rendered online-AUC Deployment sets the share explicitly, where an operator
sees and patches it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from forkcast_delivery.render import render

from forkcast_devservers.promtool import alert_rule_test

ROOT = Path(__file__).resolve().parents[2]
ALERT = "OnlineAucStarvedByKeyShare"
LABELS = 'namespace="forkcast", job="forkcast/online-auc", instance="10.0.0.7:9108", model_version="v7"'

# A missing promtool fails with the install hint (devservers fixture), never skips.
pytestmark = pytest.mark.usefixtures("promtool")


def rule() -> dict[str, Any]:
    (found,) = [
        r
        for d in render(ROOT / "manifests" / "observability").docs
        if d["kind"] == "PrometheusRule"
        for g in d["spec"]["groups"]
        for r in g["rules"]
        if r.get("alert") == ALERT
    ]
    assert isinstance(found, dict)
    return found


def promtool(tmp_path: Path, excluded: str, samples: str, expected: list[dict[str, Any]]) -> str:
    """promtool's verdict on the alert at minute 45 for these series (values in promtool's expanding notation);
    '' when it agrees with ``expected``."""
    series = [
        (f'forkcast_online_auc_excluded_pairs{{{LABELS}, window="{window}", reason="key_share"}}', excluded)
        for window in ("long", "recent")
    ] + [(f"forkcast_online_auc_samples{{{LABELS}}}", samples)]
    proc = alert_rule_test(tmp_path, [rule()], series, ALERT, "45m", expected)
    return "" if proc.returncode == 0 else proc.stdout + proc.stderr


def test_one_client_key_at_the_default_share_fires(tmp_path: Path) -> None:
    """One key, share 0.25: the job keeps none of its 1,200 pairs (samples 0), for 45 minutes."""
    firing = {
        "exp_labels": {"namespace": "forkcast", "model_version": "v7", "severity": "ticket"},
        "exp_annotations": {
            "summary": "100% of the labelled pairs of v7 are left out by the per-key share "
            "(FORKCAST_AUC_MAX_KEY_SHARE): too few client keys, or one key flooding; its online AUC and the "
            "canary's online-AUC analysis go without data"
        },
    }
    assert promtool(tmp_path, "1200x50", "0x50", [firing]) == ""


@pytest.mark.parametrize(
    ("excluded", "samples", "why"),
    [
        ("0x50", "1200x50", "four keys of equal volume: nothing left out"),
        ("400x50", "1200x50", "a heavy key loses 25 % of the pairs: the AUC still stands on most of them"),
        ("0x20 1200x30", "1200x20 0x30", "starved for 25 minutes only at minute 45"),
    ],
)
def test_twin_the_alert_stays_quiet_while_most_pairs_are_used(
    tmp_path: Path, excluded: str, samples: str, why: str
) -> None:
    verdict = promtool(tmp_path, excluded, samples, [])
    assert verdict == "", why


def test_twin_the_one_key_series_do_not_pass_as_quiet(tmp_path: Path) -> None:
    """The quiet cases above are not quiet because the rule never fires: expecting silence for one key fails."""
    verdict = promtool(tmp_path, "1200x50", "0x50", [])
    assert f"alertname: {ALERT}" in verdict and "exp:[]" in verdict.replace(" ", ""), verdict


def test_the_rendered_job_states_its_share() -> None:
    for overlay in ("dev", "prod"):
        (deployment,) = [
            d
            for d in render(ROOT / "manifests" / "overlays" / overlay).docs
            if d["kind"] == "Deployment" and d["metadata"]["name"] == "online-auc"
        ]
        env = {
            e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        assert env["FORKCAST_AUC_MAX_KEY_SHARE"] == "0.25", overlay
