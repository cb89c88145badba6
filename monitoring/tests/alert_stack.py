"""Helpers for tests that run real Prometheus and Alertmanager processes on free 127.0.0.1 ports (started and
stopped by ``forkcast_devservers``).

The configs are generated from the rendered manifests (PrometheusRule, AlertmanagerConfig, monitors) by
``forkcast_monitoring.local_alerting`` (shared with the end-to-end drill): only addresses and timings change, so
the test exercises the rules and routes that ship, sped up: every ``for:`` and every Alertmanager interval in
seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from forkcast_monitoring.local_alerting import (
    ALERTMANAGER_BIN,
    render_alertmanager,
    render_prometheus,
    render_rules,
    token_files,
)
from forkcast_monitoring.manifest_config import load

__all__ = [
    "ALERTMANAGER_BIN",
    "job_scraping",
    "render_alertmanager",
    "render_prometheus",
    "render_rules",
    "token_files",
    "wait_for",
]


def job_scraping(workload: str, overlay: str = "dev") -> str:
    """The scrape job (monitor) of the rendered overlay whose pods are ``workload``'s; fails naming it if none."""
    jobs = [j.name for j in load(overlay).scrape_jobs if workload in j.workloads]
    if len(jobs) != 1:
        raise AssertionError(f"overlay {overlay} has {len(jobs)} monitors of workload {workload!r}: {jobs}")
    return jobs[0]


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
