"""The shipped Prometheus and Alertmanager configuration rendered for processes on 127.0.0.1, sped up.

Rules, routes and receivers are the real files in monitoring/ (only addresses and timings change): every rule's
``for:`` and every Alertmanager interval become seconds, and scrapes and evaluations run every second. Used by the
alert-path test (monitoring/tests/test_alert_path.py) and by the end-to-end drill (``forkcast-local drill``), so
both exercise the rules and routes that ship.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

MONITORING = Path(__file__).resolve().parents[2]
ALERTMANAGER_BIN = "prometheus-alertmanager"
# A job's targets: one "host:port", or groups of (addresses, labels) when targets of one job differ in labels
# (the stable and canary pods of the inference Rollout, which the AnalysisTemplates select on).
Targets = str | Sequence[tuple[Sequence[str], Mapping[str, str]]]


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


def _static(targets: Targets) -> list[dict[str, Any]]:
    if isinstance(targets, str):
        return [{"targets": [targets]}]
    return [{"targets": list(addresses), "labels": dict(labels)} for addresses, labels in targets]


def render_prometheus(out: Path, targets: Mapping[str, Targets], alertmanager: str, for_s: int) -> Path:
    """The real prometheus.yml: jobs in ``targets`` scraped at those addresses every second, others dropped."""
    doc: dict[str, Any] = yaml.safe_load((MONITORING / "prometheus" / "prometheus.yml").read_text())
    doc["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    doc["rule_files"] = render_rules(out, for_s)
    doc["alerting"]["alertmanagers"] = [{"static_configs": [{"targets": [alertmanager]}]}]
    jobs = [j for j in doc["scrape_configs"] if j["job_name"] in targets]
    if {j["job_name"] for j in jobs} != set(targets):
        raise ValueError(f"a target names a job prometheus.yml lacks: {sorted(targets)}")
    doc["scrape_configs"] = [
        {"job_name": j["job_name"], "static_configs": _static(targets[j["job_name"]])} for j in jobs
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
    if not hooks:
        raise ValueError("alertmanager.yml has no webhook receiver")
    for hook in hooks:
        hook["url"] = receiver_url
    path = out / "alertmanager.yml"
    path.write_text(yaml.safe_dump(doc))
    return path
