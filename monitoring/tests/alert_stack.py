"""Helpers for tests that run real Prometheus and Alertmanager processes on free 127.0.0.1 ports (started and
stopped by ``forkcast_monitoring.prometheus_process``).

The configs are rendered from the real files in monitoring/ (only addresses and timings change), so that the test
exercises the rules and routes that ship, sped up: every ``for:`` and every Alertmanager interval in seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

MONITORING = Path(__file__).parents[1]
ALERTMANAGER_BIN = "prometheus-alertmanager"


def render_rules(out: Path, for_s: int) -> list[str]:
    """The real rule files with every ``for:`` set to ``for_s`` seconds; returns their paths."""
    paths = []
    for src in sorted((MONITORING / "prometheus" / "rules").glob("*.yml")):
        doc = yaml.safe_load(src.read_text())
        for group in doc["groups"]:
            group["interval"] = "1s"
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = f"{for_s}s"
        (out / src.name).write_text(yaml.safe_dump(doc))
        paths.append(str(out / src.name))
    return paths


def render_prometheus(out: Path, targets: dict[str, str], alertmanager: str, for_s: int) -> Path:
    """The real prometheus.yml: jobs in ``targets`` scraped at those addresses every second, others dropped."""
    doc: dict[str, Any] = yaml.safe_load((MONITORING / "prometheus" / "prometheus.yml").read_text())
    doc["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    doc["rule_files"] = render_rules(out, for_s)
    doc["alerting"]["alertmanagers"] = [{"static_configs": [{"targets": [alertmanager]}]}]
    jobs = [j for j in doc["scrape_configs"] if j["job_name"] in targets]
    assert {j["job_name"] for j in jobs} == set(targets), "a target names a job prometheus.yml lacks"
    doc["scrape_configs"] = [
        {"job_name": j["job_name"], "static_configs": [{"targets": [targets[j["job_name"]]]}]} for j in jobs
    ]
    path = out / "prometheus.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def render_alertmanager(out: Path, receiver_url: str) -> Path:
    """The real alertmanager.yml with second-scale intervals and the retrain webhook pointed at ``receiver_url``."""
    doc: dict[str, Any] = yaml.safe_load((MONITORING / "alertmanager" / "alertmanager.yml").read_text())

    def speed(route: dict[str, Any]) -> None:
        for key, value in (("group_wait", "1s"), ("group_interval", "1s"), ("repeat_interval", "2s")):
            if key in route:
                route[key] = value
        for child in route.get("routes", []):
            speed(child)

    speed(doc["route"])
    hooks = [h for r in doc["receivers"] for h in r.get("webhook_configs", [])]
    assert hooks, "alertmanager.yml has no webhook receiver"
    for hook in hooks:
        hook["url"] = receiver_url
    path = out / "alertmanager.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
