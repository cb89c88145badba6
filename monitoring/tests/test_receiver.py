"""The alert receiver against a local HTTP recorder standing in for GitLab (there is no GitLab server here):
Alertmanager-shaped webhooks in, exactly one trigger per incident out, with the variables the CI requires.
Also checks the Alertmanager config with the real amtool; the run through real Prometheus and Alertmanager
processes is test_alert_path.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from forkcast_monitoring.receiver import TriggerTarget, make_server


def post(url: str, alerts: list[dict[str, Any]]) -> None:
    data = json.dumps({"version": "4", "status": "firing", "alerts": alerts}).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200


def alert(fp: str, status: str = "firing", version: str = "v2") -> dict[str, Any]:
    return {
        "status": status,
        "fingerprint": fp,
        "labels": {"alertname": "OnlineAucLow", "action": "retrain", "model_version": version},
        "annotations": {"summary": f"Online AUC of {version} is 0.620, below the 0.70 floor"},
    }


def test_one_trigger_per_incident(recorder: tuple[str, list[Any]]) -> None:
    gitlab, calls = recorder
    server = make_server(
        "127.0.0.1", 0, TriggerTarget(gitlab, "group/forkcast", "main", "s3cret"), cooldown_s=3600
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/alerts"
    try:
        post(url, [alert("a1")])
        post(url, [alert("a1")])  # Alertmanager's repeat
        post(url, [alert("a1"), alert("b2", version="v3")])  # a second alert of the same incident: cooldown
        post(url, [alert("a1", status="resolved")])
        post(url, [alert("a1")])  # fires again inside the cooldown
        metrics = urllib.request.urlopen(url.replace("/alerts", "/metrics"), timeout=5).read().decode()
    finally:
        server.shutdown()
    assert len(calls) == 1
    path, form = calls[0]
    assert path == "/api/v4/projects/group%2Fforkcast/trigger/pipeline"
    assert form == {
        "token": ["s3cret"],
        "ref": ["main"],
        "variables[ALERT_NAME]": ["OnlineAucLow"],
        "variables[ALERT_REASON]": ["Online AUC of v2 is 0.620, below the 0.70 floor"],
    }
    assert 'forkcast_retrain_triggers_total{outcome="sent"} 1.0' in metrics
    assert 'forkcast_retrain_triggers_total{outcome="cooldown"} 2.0' in metrics


def test_failed_trigger_is_retried_on_the_next_repeat(recorder: tuple[str, list[Any]]) -> None:
    _gitlab, calls = recorder
    server = make_server(
        "127.0.0.1", 0, TriggerTarget("http://127.0.0.1:9", "1", "main", "t"), cooldown_s=3600
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/alerts"
    try:
        post(url, [alert("a1")])  # GitLab unreachable
        post(url, [alert("a1")])  # the repeat is tried again, not swallowed as a duplicate
        metrics = urllib.request.urlopen(url.replace("/alerts", "/metrics"), timeout=5).read().decode()
    finally:
        server.shutdown()
    assert 'forkcast_retrain_triggers_total{outcome="failed"} 2.0' in metrics
    assert calls == []


@pytest.mark.skipif(
    shutil.which("amtool") is None, reason="amtool missing (Debian package prometheus-alertmanager)"
)
def test_alertmanager_config_is_valid() -> None:
    path = Path(__file__).parents[1] / "alertmanager" / "alertmanager.yml"
    result = subprocess.run(["amtool", "check-config", str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
