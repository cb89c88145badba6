"""Reading rendered objects the way the Kubernetes API server and controllers do: label selectors, pod templates,
container ports, and what a container runs.

Selector semantics follow the API reference (LabelSelector: matchLabels and matchExpressions are ANDed; operators
In, NotIn, Exists, DoesNotExist; an empty selector matches everything):
https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/label-selector/
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from forkcast_delivery.render import Doc

# Kinds whose spec.template is a pod template (Argo Rollouts' Rollout included).
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Rollout", "Job")


def ref(doc: Doc) -> str:
    """``Kind/name``, how problems name an object."""
    return f"{doc['kind']}/{doc['metadata']['name']}"


def matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Whether a LabelSelector selects an object with ``labels`` (None: selects nothing, as for a Service)."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != str(value):
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], [str(v) for v in expr.get("values") or []]
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def matches_plain(selector: Mapping[str, str] | None, labels: Mapping[str, str]) -> bool:
    """A Service's selector: a plain map, every pair must match; empty or absent selects no pod."""
    if not selector:
        return False
    return all(labels.get(k) == str(v) for k, v in selector.items())


@dataclass(frozen=True)
class PodTemplate:
    """The pod template of one workload: its labels and spec, named by the workload."""

    owner: Doc
    labels: Mapping[str, str]
    spec: Mapping[str, Any]

    @property
    def name(self) -> str:
        return ref(self.owner)

    def containers(self) -> list[Mapping[str, Any]]:
        return list(self.spec.get("initContainers") or []) + list(self.spec.get("containers") or [])

    def ports(self) -> Iterator[tuple[Mapping[str, Any], Mapping[str, Any]]]:
        """(container, port) for every declared container port."""
        for container in self.spec.get("containers") or []:
            for port in container.get("ports") or []:
                yield container, port


def pod_templates(docs: Iterable[Doc]) -> list[PodTemplate]:
    out = []
    for doc in docs:
        if doc["kind"] in WORKLOAD_KINDS:
            template = doc["spec"].get("template") or {}
            labels = {k: str(v) for k, v in (template.get("metadata", {}).get("labels") or {}).items()}
            out.append(PodTemplate(doc, labels, template.get("spec") or {}))
    return out


def resolve_port(template: PodTemplate, port: int | str, protocol: str = "TCP") -> int | None:
    """A port number or container-port name of a pod template as a number (None: the pod declares no such name)."""
    if isinstance(port, int):
        return port
    if port.isdigit():
        return int(port)
    for _, declared in template.ports():
        if declared.get("name") == port and declared.get("protocol", "TCP") == protocol:
            return int(declared["containerPort"])
    return None


def of_kind(docs: Iterable[Doc], *kinds: str) -> list[Doc]:
    return [d for d in docs if d["kind"] in kinds]
