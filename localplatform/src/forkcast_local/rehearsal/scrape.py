"""Prometheus targets for the rehearsal's pods, labelled as the rendered PodMonitor labels them in a cluster.

The AnalysisTemplates select series by ``namespace`` and ``rollouts_pod_template_hash``; in a cluster those labels
come from the inference PodMonitor's ``relabelings`` applied to Kubernetes service-discovery meta labels. Here the
same relabelings are applied to the same meta labels of each local pod, and the result is written as a Prometheus
``file_sd`` target file, which Prometheus re-reads when it changes (file_sd_config: "Changes to all defined files
are detected via disk watches and applied immediately",
https://prometheus.io/docs/prometheus/latest/configuration/configuration/#file_sd_config), so pods come and go
without a restart.

Meta labels as Kubernetes SD names them (same page, ``pod`` role): ``__meta_kubernetes_namespace``,
``__meta_kubernetes_pod_name``, ``__meta_kubernetes_pod_label_<labelname>`` with the label name's characters outside
``[a-zA-Z0-9_]`` replaced by ``_``. Relabeling: the ``replace`` action with its defaults (separator ``;``, regex
``(.*)`` fully anchored, replacement ``$1``; https://prometheus.io/docs/prometheus/latest/configuration/
configuration/#relabel_config); prometheus-operator writes ``sourceLabels``/``targetLabel`` as
``source_labels``/``target_label``. Any other action, regex or replacement is refused rather than approximated.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forkcast_local.rehearsal.spec import SpecError


@dataclass(frozen=True)
class ScrapedPod:
    """A local pod as Kubernetes SD would see it: its name, labels and the loopback address of its metrics."""

    name: str
    namespace: str
    labels: Mapping[str, str]
    address: str  # host:port


def meta_labels(pod: ScrapedPod) -> dict[str, str]:
    """The ``pod``-role meta labels relabelings read."""
    out = {"__meta_kubernetes_namespace": pod.namespace, "__meta_kubernetes_pod_name": pod.name}
    for key, value in pod.labels.items():
        out["__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", key)] = value
    return out


def _relabel(rule: Mapping[str, Any], labels: dict[str, str], where: str) -> None:
    extra = set(rule) - {"sourceLabels", "targetLabel", "action", "regex", "replacement", "separator"}
    if extra or rule.get("action", "replace") != "replace" or rule.get("regex", "(.*)") != "(.*)":
        raise SpecError(f"{where}: relabeling {dict(rule)!r} is not a plain replace")
    if rule.get("replacement", "$1") != "$1" or "targetLabel" not in rule:
        raise SpecError(f"{where}: relabeling {dict(rule)!r} is not a plain replace")
    value = rule.get("separator", ";").join(labels.get(s, "") for s in rule.get("sourceLabels", []))
    # Prometheus: a replace whose result is empty removes the target label.
    if value:
        labels[rule["targetLabel"]] = value
    else:
        labels.pop(rule["targetLabel"], None)


def target_labels(docs: Iterable[Mapping[str, Any]], monitor: str, pod: ScrapedPod) -> dict[str, str]:
    """The labels the rendered PodMonitor ``monitor`` gives ``pod``'s series (meta labels dropped, as Prometheus
    drops every ``__`` label after relabeling)."""
    found = [d for d in docs if d.get("kind") == "PodMonitor" and d["metadata"]["name"] == monitor]
    if len(found) != 1:
        raise SpecError(f"the render holds {len(found)} PodMonitors named {monitor}")
    endpoints = found[0]["spec"].get("podMetricsEndpoints", [])
    if len(endpoints) != 1:
        raise SpecError(f"PodMonitor {monitor} has {len(endpoints)} endpoints; the rehearsal scrapes one")
    labels = meta_labels(pod)
    for rule in endpoints[0].get("relabelings", []):
        _relabel(rule, labels, f"PodMonitor {monitor}")
    return {k: v for k, v in labels.items() if not k.startswith("__")}


def write_targets(path: Path, entries: list[dict[str, Any]]) -> None:
    """Replace the file_sd file atomically (Prometheus never reads half a file)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(entries, indent=1))
    tmp.replace(path)


def file_sd_entries(docs: Iterable[Mapping[str, Any]], monitor: str, pods: Iterable[ScrapedPod]) -> list[Any]:
    docs = list(docs)
    return [{"targets": [p.address], "labels": target_labels(docs, monitor, p)} for p in pods]


def prometheus_config(targets: Path, *, job: str, interval_s: float) -> dict[str, Any]:
    """A Prometheus config scraping the file_sd targets every ``interval_s`` (rules evaluated as often)."""
    every = f"{max(interval_s, 0.001) * 1000:.0f}ms"
    return {
        "global": {"scrape_interval": every, "evaluation_interval": every},
        "scrape_configs": [
            {"job_name": job, "file_sd_configs": [{"files": [str(targets)], "refresh_interval": "1s"}]}
        ],
    }
