"""The served log's alerts (manifests/observability): each fires, promtool-tested, on a series the compaction job
exports with the job's own labels, and stays quiet when it should:

* LakeCompactionLagging: the oldest uncommitted entry of a stream over 10 minutes old for 10 minutes;
* LakeCommitStale: no commit of a stream with entries to commit for over 3 minutes (the S3 outage that froze the lag
  while /metrics kept answering); LakeCommitTimeAbsent: no job exports the commit time at all;
* LakeEntriesLost: any entry the producers' MAXLEN cap deleted before the job read it;
* LakeMalformedEntries: any stream entry that decoded to no row."""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from forkcast_delivery.render import render
from prometheus_client import generate_latest

from forkcast_contract import metric_names as n
from forkcast_contract.streams import FEEDBACK_STREAM, PREDICTIONS_STREAM
from forkcast_devservers.promtool import alert_rule_test
from forkcast_lake.compact_metrics import CompactMetrics

ROOT = Path(__file__).resolve().parents[2]
JOB = 'namespace="forkcast", job="forkcast/lake-compact", instance="10.0.0.7:9111"'
LABELS = f'{JOB}, stream="{PREDICTIONS_STREAM}"'
FEEDBACK_LABELS = f'{JOB}, stream="{FEEDBACK_STREAM}"'


@cache
def _docs() -> list[dict[str, Any]]:
    return list(render(ROOT / "manifests" / "observability").docs)


def rule(alert: str) -> dict[str, Any]:
    (found,) = [
        r
        for d in _docs()
        if d["kind"] == "PrometheusRule"
        for g in d["spec"]["groups"]
        for r in g["rules"]
        if r.get("alert") == alert
    ]
    return found


def lag_rule() -> dict[str, Any]:
    return rule("LakeCompactionLagging")


def promtool(
    tmp_path: Path, alert: str, series: list[tuple[str, str]], eval_time: str, expected: list[dict[str, Any]]
) -> subprocess.CompletedProcess[str]:
    """``promtool test rules`` of ``alert`` alone over ``series`` (name{labels}, values), evaluated at
    ``eval_time``."""
    return alert_rule_test(tmp_path, [rule(alert)], series, alert, eval_time, expected)


def promtool_test(tmp_path: Path, lag_values: str) -> subprocess.CompletedProcess[str]:
    expected = {"namespace": "forkcast", "stream": PREDICTIONS_STREAM, "severity": "page"}
    summary = (
        f"The lake is 11m 40s behind stream {PREDICTIONS_STREAM}: entries are committed late and the stream's "
        "MAXLEN cap will drop the uncommitted ones"
    )
    return promtool(
        tmp_path,
        "LakeCompactionLagging",
        [(f"{n.LAKE_LAG_SECONDS}{{{LABELS}}}", lag_values)],
        "20m",
        [{"exp_labels": expected, "exp_annotations": {"summary": summary}}],
    )


def _quiet(proc: subprocess.CompletedProcess[str], why: str) -> None:
    assert proc.returncode == 1, why
    assert "got:[]" in (proc.stdout + proc.stderr).replace(" ", ""), why


def test_the_rules_read_series_the_job_exports_with_the_label_they_group_by() -> None:
    metrics = CompactMetrics()
    metrics.lag_seconds.labels(PREDICTIONS_STREAM).set(700)
    metrics.last_commit.labels(PREDICTIONS_STREAM).set(1_700_000_000)
    metrics.lost.labels(FEEDBACK_STREAM).inc(30)
    metrics.malformed.labels(FEEDBACK_STREAM).inc(2)
    exposition = generate_latest(metrics.registry).decode()
    assert f'{n.LAKE_LAG_SECONDS}{{stream="{PREDICTIONS_STREAM}"}} 700.0' in exposition
    assert f'{n.LAKE_LAST_COMMIT_TIMESTAMP}{{stream="{PREDICTIONS_STREAM}"}} 1.7e+09' in exposition
    assert f'{n.LAKE_LOST_ENTRIES_TOTAL}{{stream="{FEEDBACK_STREAM}"}} 30.0' in exposition
    assert f'{n.LAKE_MALFORMED_TOTAL}{{stream="{FEEDBACK_STREAM}"}} 2.0' in exposition
    for alert, name in (
        ("LakeCompactionLagging", n.LAKE_LAG_SECONDS),
        ("LakeCommitStale", n.LAKE_LAST_COMMIT_TIMESTAMP),
        ("LakeCommitTimeAbsent", n.LAKE_LAST_COMMIT_TIMESTAMP),
        ("LakeEntriesLost", n.LAKE_LOST_ENTRIES_TOTAL),
        ("LakeMalformedEntries", n.LAKE_MALFORMED_TOTAL),
    ):
        assert name in rule(alert)["expr"], alert
        assert alert == "LakeCommitTimeAbsent" or "stream" in rule(alert)["expr"], alert


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
    _quiet(promtool_test(tmp_path, values), why)


def _stale(tmp_path: Path, values: str) -> subprocess.CompletedProcess[str]:
    summary = (
        f"The lake has not committed stream {FEEDBACK_STREAM} for 10m 0s: its entries wait in Redis until the "
        "producers' MAXLEN cap deletes them"
    )
    expected = {"namespace": "forkcast", "stream": FEEDBACK_STREAM, "severity": "page"}
    return promtool(
        tmp_path,
        "LakeCommitStale",
        [(f"{n.LAKE_LAST_COMMIT_TIMESTAMP}{{{FEEDBACK_LABELS}}}", values)],
        "20m",
        [{"exp_labels": expected, "exp_annotations": {"summary": summary}}],
    )


@pytest.mark.usefixtures("promtool")
def test_a_commit_time_frozen_for_minutes_pages_while_metrics_still_answer(tmp_path: Path) -> None:
    # Commits every minute until minute 10 (the value is the Unix time: promtool's clock starts at 0), then the S3
    # outage: the job keeps being scraped, the time stays at 600; at minute 20 it is 10 minutes old.
    proc = _stale(tmp_path, "0+60x10 600x10")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("values", "why"),
    [
        ("0+60x20", "committed (or found caught up) every minute"),
        ("0+60x17 1020x3", "3 minutes since the last commit at minute 20: one batch interval and some"),
    ],
)
@pytest.mark.usefixtures("promtool")
def test_twin_a_fresh_commit_time_stays_quiet(tmp_path: Path, values: str, why: str) -> None:
    _quiet(_stale(tmp_path, values), why)


@pytest.mark.usefixtures("promtool")
def test_no_commit_time_at_all_pages(tmp_path: Path) -> None:
    # The job is scraped (its lag is there) but never set the commit time: every start failed, entries waiting.
    lag = [(f"{n.LAKE_LAG_SECONDS}{{{LABELS}}}", "0+60x20")]
    summary = (
        "No lake-compact job reports forkcast_lake_last_commit_timestamp_seconds: the served log is not being "
        "committed"
    )
    expected = [{"exp_labels": {"severity": "page"}, "exp_annotations": {"summary": summary}}]
    proc = promtool(tmp_path, "LakeCommitTimeAbsent", lag, "15m", expected)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    twin = [*lag, (f"{n.LAKE_LAST_COMMIT_TIMESTAMP}{{{FEEDBACK_LABELS}}}", "0+60x20")]
    _quiet(promtool(tmp_path, "LakeCommitTimeAbsent", twin, "15m", expected), "the commit time is exported")


def _counter_alert(
    tmp_path: Path, alert: str, name: str, values: str, summary: str
) -> subprocess.CompletedProcess[str]:
    severity = "page" if alert == "LakeEntriesLost" else "warning"
    expected = {"namespace": "forkcast", "stream": FEEDBACK_STREAM, "severity": severity}
    return promtool(
        tmp_path,
        alert,
        [(f"{name}{{{FEEDBACK_LABELS}}}", values)],
        "10m",
        [{"exp_labels": expected, "exp_annotations": {"summary": summary}}],
    )


LOST = f"3 entries of stream {FEEDBACK_STREAM} were deleted by the producers' MAXLEN cap before the lake read them"
MALFORMED = (
    f"3 entries of stream {FEEDBACK_STREAM} did not decode in the last 15 minutes: counted, no row, the compaction "
    "went on past them"
)


@pytest.mark.parametrize(
    ("alert", "name", "summary"),
    [
        ("LakeEntriesLost", n.LAKE_LOST_ENTRIES_TOTAL, LOST),
        ("LakeMalformedEntries", n.LAKE_MALFORMED_TOTAL, MALFORMED),
    ],
)
@pytest.mark.usefixtures("promtool")
def test_any_lost_or_malformed_entry_alerts(tmp_path: Path, alert: str, name: str, summary: str) -> None:
    # The counter exists at 0 from the job's start (Compactor.__init__), so the first increase is seen.
    proc = _counter_alert(tmp_path, alert, name, "0x5 3x10", summary)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _quiet(_counter_alert(tmp_path, alert, name, "3x20", summary), "nothing new in the last 15 minutes")
