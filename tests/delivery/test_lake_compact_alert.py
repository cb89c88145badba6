"""Alert LakeCompactionLagging (manifests/observability): it fires on the series the compaction job exports, with the
job's own labels, once the oldest uncommitted entry of a stream has been over 10 minutes old for 10 minutes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from forkcast_delivery.render import render
from prometheus_client import generate_latest

from forkcast_contract import metric_names as n
from forkcast_contract.streams import PREDICTIONS_STREAM
from forkcast_lake.compact_metrics import CompactMetrics

ROOT = Path(__file__).resolve().parents[2]
LABELS = f'namespace="forkcast", job="forkcast/lake-compact", instance="10.0.0.7:9111", stream="{PREDICTIONS_STREAM}"'


def lag_rule() -> dict[str, Any]:
    (rule,) = [
        r
        for d in render(ROOT / "manifests" / "observability").docs
        if d["kind"] == "PrometheusRule"
        for g in d["spec"]["groups"]
        for r in g["rules"]
        if r.get("alert") == "LakeCompactionLagging"
    ]
    return rule


def promtool_test(tmp_path: Path, lag_values: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "lake", "rules": [lag_rule()]}]}))
    expected = {"namespace": "forkcast", "stream": PREDICTIONS_STREAM, "severity": "page"}
    summary = (
        f"The lake is 11m 40s behind stream {PREDICTIONS_STREAM}: entries are committed late and the stream's "
        "MAXLEN cap will drop the uncommitted ones"
    )
    test = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": f"{n.LAKE_LAG_SECONDS}{{{LABELS}}}", "values": lag_values}],
                "alert_rule_test": [
                    {
                        "eval_time": "20m",
                        "alertname": "LakeCompactionLagging",
                        "exp_alerts": [{"exp_labels": expected, "exp_annotations": {"summary": summary}}],
                    }
                ],
            }
        ],
    }
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test))
    promtool = shutil.which("promtool")
    assert promtool is not None
    return subprocess.run(
        [promtool, "test", "rules", "test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_the_rule_reads_a_series_the_job_exports_with_the_label_it_groups_by() -> None:
    metrics = CompactMetrics()
    metrics.lag_seconds.labels(PREDICTIONS_STREAM).set(700)
    exposition = generate_latest(metrics.registry).decode()
    assert f'{n.LAKE_LAG_SECONDS}{{stream="{PREDICTIONS_STREAM}"}} 700.0' in exposition
    assert n.LAKE_LAG_SECONDS in lag_rule()["expr"] and "stream" in lag_rule()["expr"]


@pytest.mark.usefixtures("promtool")
def test_the_alert_fires_after_10_minutes_over_10_minutes_behind(tmp_path: Path) -> None:
    proc = promtool_test(tmp_path, "700x30")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("values", "why"),
    [
        ("300x30", "5 minutes behind: a batch interval or a short outage"),
        ("700x12 30x18", "caught up again before it had lasted 10 minutes at minute 20"),
    ],
)
@pytest.mark.usefixtures("promtool")
def test_twin_the_alert_stays_quiet(tmp_path: Path, values: str, why: str) -> None:
    proc = promtool_test(tmp_path, values)
    assert proc.returncode == 1, why
    assert "got:[]" in (proc.stdout + proc.stderr).replace(" ", ""), why
