"""End to end: a low online AUC scraped by a real Prometheus fires OnlineAucLow (the rendered PrometheusRule, sped
up), a real Alertmanager routes it (the rendered AlertmanagerConfig as the operator converts it, sped up) to the real
alert receiver process with the bearer token the AlertmanagerConfig names, which triggers "GitLab" (a local HTTP
recorder) exactly once, although Alertmanager re-sends the alert several times."""

from __future__ import annotations

import os
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, start_http_server

from forkcast_contract import metric_names as n
from forkcast_devservers.ports import free_port
from forkcast_devservers.process import Proc, spawn, stop
from forkcast_devservers.ready import http_ok, wait_until
from forkcast_devservers.servers import Alertmanager, Prometheus
from forkcast_monitoring.local_alerting import render_alertmanager, render_prometheus, token_files
from forkcast_monitoring.manifest_config import load


def job_scraping(workload: str, overlay: str = "dev") -> str:
    """The scrape job (monitor) of the rendered overlay whose pods are ``workload``'s; fails naming it if none."""
    jobs = [j.name for j in load(overlay).scrape_jobs if workload in j.workloads]
    if len(jobs) != 1:
        raise AssertionError(f"overlay {overlay} has {len(jobs)} monitors of workload {workload!r}: {jobs}")
    return jobs[0]


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    wait_until(check, timeout_s=timeout_s, what=what)


def receiver_metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
        return str(resp.read().decode())


def test_low_auc_triggers_exactly_one_retrain(tmp_path: Path, recorder: tuple[str, list[Any]]) -> None:
    gitlab, calls = recorder
    registry = CollectorRegistry()
    auc = Gauge(n.ONLINE_AUC, "test exporter", ["model_version"], registry=registry)
    auc.labels("20261123T101500Z-0123abcd").set(0.61)
    auc.labels("20261101T000000Z-89abcdef").set(0.80)  # a healthy version: must not be part of the trigger
    exporter_port = free_port()
    exporter, _thread = start_http_server(exporter_port, addr="127.0.0.1", registry=registry)
    ports = {name: free_port() for name in ("alertmanager", "receiver", "receiver-metrics")}
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    receiver_bin = str(Path(sys.executable).parent / "forkcast-alert-receiver")
    # The exporter stands in for the online-AUC job: scraped as the monitor of that workload in the render.
    prom_cfg = render_prometheus(
        tmp_path,
        {job_scraping("online-auc"): f"127.0.0.1:{exporter_port}"},
        f"127.0.0.1:{ports['alertmanager']}",
        for_s=2,
    )
    am_cfg = render_alertmanager(tmp_path, f"http://127.0.0.1:{ports['receiver']}/alerts")
    (webhook_token,) = token_files(tmp_path).values()
    procs: list[Proc] = []
    try:
        procs.append(
            spawn(
                [
                    receiver_bin,
                    *(
                        "--port",
                        str(ports["receiver"]),
                        "--metrics-port",
                        str(ports["receiver-metrics"]),
                        "--gitlab-url",
                        gitlab,
                        "--project-id",
                        "group/forkcast",
                    ),
                    *("--ref", "main", "--token-file", str(token)),
                    # The token Alertmanager presents: the file render_alertmanager wrote for Secret
                    # forkcast-alert-receiver (key token) of the AlertmanagerConfig.
                    *("--webhook-token-file", str(webhook_token)),
                ],
                # FORKCAST_ENVIRONMENT defaults to production, which refuses loopback development defaults.
                env={**os.environ, "FORKCAST_ENVIRONMENT": "local"},
                log=tmp_path / "receiver.log",
            )
        )
        with (
            Alertmanager(tmp_path / "alertmanager", config=am_cfg, port=ports["alertmanager"]),
            Prometheus(tmp_path / "prometheus", config=prom_cfg),
        ):
            wait_for(
                lambda: http_ok(f"http://127.0.0.1:{ports['receiver-metrics']}/metrics"), 20, "the receiver"
            )
            wait_for(lambda: len(calls) >= 1, 60, "the GitLab trigger")
            # Alertmanager re-sends the firing group every repeat interval (2 s here): wait for two repeats.
            wait_for(
                lambda: "duplicate" in receiver_metrics(ports["receiver-metrics"]),
                30,
                "a repeated notification",
            )
            time.sleep(5)
            metrics = receiver_metrics(ports["receiver-metrics"])
    finally:
        for proc in reversed(procs):
            stop(proc)
        exporter.shutdown()
    assert len(calls) == 1, calls
    path, form = calls[0]
    assert path == "/api/v4/projects/group%2Fforkcast/trigger/pipeline"
    assert form["token"] == ["s3cret"] and form["ref"] == ["main"]
    assert not [k for k in form if k.startswith("variables")]  # inputs only (issue 18.3)
    assert form["inputs[alert_name]"] == ["OnlineAucLow"]
    assert "20261123T101500Z-0123abcd" in form["inputs[alert_reason]"][0]
    assert 'forkcast_retrain_triggers_total{outcome="sent"} 1.0' in metrics
    assert 'outcome="unauthorized"' not in metrics  # no notification of Alertmanager was refused
