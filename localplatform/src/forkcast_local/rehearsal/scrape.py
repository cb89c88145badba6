"""Prometheus targets for the rehearsal's pods: each pod with the meta labels Kubernetes service discovery gives it.

The AnalysisTemplates select series by ``namespace`` and ``rollouts_pod_template_hash``; in a cluster those labels
come from the inference PodMonitor's ``relabelings`` applied to Kubernetes SD's meta labels. Here each local pod is
written to its monitor's ``file_sd`` target list (``observability.file_sd_prometheus_config`` makes one per rendered
monitor) with the same meta labels, and Prometheus applies the rendered relabelings itself: a label the monitor does
not copy is missing here too, and ``Rehearsal`` refuses to start without the labels the templates select by.

Meta labels as Kubernetes SD names them (https://prometheus.io/docs/prometheus/latest/configuration/configuration/
#kubernetes_sd_config, ``pod`` role): ``__meta_kubernetes_namespace``, ``__meta_kubernetes_pod_name``,
``__meta_kubernetes_pod_label_<labelname>`` with the label name's characters outside ``[a-zA-Z0-9_]`` replaced by
``_``. Prometheus drops every ``__`` label once relabeling is done.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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


def file_sd_entries(pods: Iterable[ScrapedPod]) -> list[dict[str, Any]]:
    """One file_sd target group per pod, labelled with its meta labels."""
    return [{"targets": [p.address], "labels": meta_labels(p)} for p in pods]


def write_targets(path: Path, entries: list[dict[str, Any]]) -> None:
    """Replace the file_sd file atomically (Prometheus never reads half a file)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(entries, indent=1))
    tmp.replace(path)
