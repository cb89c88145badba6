"""The cluster's Prometheus and Alertmanager configuration, from the rendered manifests, for processes on 127.0.0.1.

Rules come from ``kubectl kustomize manifests/observability`` (the cluster-wide PrometheusRule's groups), routes,
receivers and scrape jobs from ``kubectl kustomize manifests/overlays/<overlay>`` (the AlertmanagerConfig converted
as the operator converts it, one job per PodMonitor/ServiceMonitor), both through
``forkcast_monitoring.manifest_config``. Only addresses and timings change: every rule's
``for:`` and every Alertmanager interval become seconds, and scrapes and evaluations run every second. Used by the
alert-path test (monitoring/tests/e2e/test_alert_path.py) and by the end-to-end drill (``forkcast-local drill``), so
both exercise the rules and routes that ship; a job, rule or route the manifests lack is missing here too.
"""

from __future__ import annotations

import copy
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from forkcast_monitoring.manifest_config import DEFAULT_OVERLAY, MANIFESTS, SecretRef, load, secret_refs

RULES_FILE = "forkcast-rules.yml"
# A job's targets: one "host:port", or groups of (addresses, labels) when targets of one job differ in labels
# (the stable and canary pods of the inference Rollout, which the AnalysisTemplates select on).
Targets = str | Sequence[tuple[Sequence[str], Mapping[str, str]]]


def rule_file(
    out: Path, overlay: str = DEFAULT_OVERLAY, for_s: int | None = None, manifests: Path = MANIFESTS
) -> Path:
    """``out/forkcast-rules.yml``: the rendered PrometheusRule's groups; with ``for_s``, sped up (every ``for:``
    that many seconds, every group evaluated each second)."""
    doc = copy.deepcopy(load(overlay, manifests).rules())
    if for_s is not None:
        for group in doc["groups"]:
            group["interval"] = "1s"
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = f"{for_s}s"
    path = out / RULES_FILE
    path.write_text("# Generated from the PrometheusRule of manifests/observability; do not edit.\n")
    with path.open("a") as sink:
        yaml.safe_dump(doc, sink, sort_keys=False)
    return path


def render_rules(
    out: Path, for_s: int, overlay: str = DEFAULT_OVERLAY, manifests: Path = MANIFESTS
) -> list[str]:
    """The rendered rules with every ``for:`` set to ``for_s`` seconds; returns the rule files' paths."""
    return [str(rule_file(out, overlay, for_s, manifests))]


def _static(targets: Targets, namespace: str) -> list[dict[str, Any]]:
    # The operator labels every target with its pod's namespace; here every process runs as the overlay's namespace
    # (a group's own namespace label is replaced), so the rules' by (namespace) joins and the AlertmanagerConfig's
    # namespace matcher see what they see in the cluster.
    if isinstance(targets, str):
        return [{"targets": [targets], "labels": {"namespace": namespace}}]
    return [{"targets": list(a), "labels": {**labels, "namespace": namespace}} for a, labels in targets]


def render_prometheus(
    out: Path,
    targets: Mapping[str, Targets],
    alertmanager: str,
    for_s: int,
    overlay: str = DEFAULT_OVERLAY,
    manifests: Path = MANIFESTS,
) -> Path:
    """``out/prometheus.yml``: the jobs named in ``targets`` (each a monitor of the render) scraped at those
    addresses every second on the monitor's path, the rendered rules sped up, alerts to ``alertmanager``."""
    config = load(overlay, manifests)
    jobs = []
    for name, where in targets.items():
        job = config.job(name)  # raises for a job the manifests lack
        jobs.append(
            {"job_name": name, "metrics_path": job.path, "static_configs": _static(where, config.namespace)}
        )
    doc = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": render_rules(out, for_s, overlay, manifests),
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": jobs,
    }
    path = out / "prometheus.yml"
    path.write_text(
        f"# Generated from manifests/overlays/{overlay} (monitors) and manifests/observability (PrometheusRule);"
        " do not edit.\n"
    )
    with path.open("a") as sink:
        yaml.safe_dump(doc, sink, sort_keys=False)
    return path


def speed_up(route: dict[str, Any]) -> None:
    """Second-scale Alertmanager intervals on ``route`` and its children (drills and tests)."""
    for key, value in (("group_wait", "1s"), ("group_interval", "1s"), ("repeat_interval", "2s")):
        if key in route:
            route[key] = value
    for child in route.get("routes", []):
        speed_up(child)


def token_files(
    out: Path, overlay: str = DEFAULT_OVERLAY, manifests: Path = MANIFESTS
) -> dict[SecretRef, Path]:
    """A local file per Secret key the AlertmanagerConfigs read (``out/<secret>.<key>``), created with a random
    value when missing; the caller hands the same file to the process that checks it (the alert receiver)."""
    files = {}
    for ref in sorted(
        secret_refs(load(overlay, manifests).alertmanager_configs), key=lambda r: (r.name, r.key)
    ):
        path = out / f"{ref.name}.{ref.key}"
        if not path.exists():
            path.write_text(secrets.token_hex(16) + "\n")
            path.chmod(0o600)
        files[ref] = path
    return files


def render_alertmanager(
    out: Path, receiver_url: str, overlay: str = DEFAULT_OVERLAY, manifests: Path = MANIFESTS
) -> Path:
    """``out/alertmanager.yml``: the rendered AlertmanagerConfig's routes (sped up) with every webhook pointed at
    ``receiver_url`` and its bearer token read from ``token_files(out)``."""
    config = load(overlay, manifests)
    doc = config.alertmanager(token_files(out, overlay, manifests))
    speed_up(doc["route"])
    hooks = [h for r in doc["receivers"] for h in r.get("webhook_configs", [])]
    if not hooks:
        raise ValueError(f"the AlertmanagerConfig of overlay {overlay} has no webhook receiver")
    for hook in hooks:
        hook["url"] = receiver_url
    path = out / "alertmanager.yml"
    path.write_text(
        f"# Generated from the AlertmanagerConfig of manifests/overlays/{overlay}; do not edit.\n"
    )
    with path.open("a") as sink:
        yaml.safe_dump(doc, sink, sort_keys=False)
    return path
