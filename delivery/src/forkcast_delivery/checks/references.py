"""Every ConfigMap and Secret a pod (or an Ingress, or an AlertmanagerConfig) references exists: rendered by the
overlay, or listed with its keys in manifests/provided-by-cluster.yaml, the one file of objects made out of band.

A missing Secret keeps a pod in CreateContainerConfigError; a missing key the same. References marked
``optional: true`` are allowed to be absent, as Kubernetes allows.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from forkcast_delivery.checks.problem import Problem
from forkcast_delivery.context import Context
from forkcast_delivery.objects import of_kind, ref

RULE = "references"
# cert-manager creates an Ingress's TLS Secret when one of these annotations names an issuer
# (https://cert-manager.io/docs/usage/ingress/).
CERT_MANAGER = ("cert-manager.io/cluster-issuer", "cert-manager.io/issuer")


@dataclass(frozen=True)
class Reference:
    holder: str
    kind: str  # ConfigMap | Secret
    name: str
    key: str | None
    optional: bool = False


def _pod_references(holder: str, spec: Mapping[str, Any]) -> Iterator[Reference]:
    containers = list(spec.get("initContainers") or []) + list(spec.get("containers") or [])
    for container in containers:
        for source in container.get("envFrom") or []:
            for field, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                if field in source:
                    r = source[field]
                    yield Reference(holder, kind, r["name"], None, bool(r.get("optional")))
        for var in container.get("env") or []:
            value_from = var.get("valueFrom") or {}
            for field, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                if field in value_from:
                    r = value_from[field]
                    yield Reference(holder, kind, r["name"], r["key"], bool(r.get("optional")))
    for volume in spec.get("volumes") or []:
        sources = [volume, *((volume.get("projected") or {}).get("sources") or [])]
        for source in sources:
            if "configMap" in source:
                yield from _volume_items(
                    holder, "ConfigMap", source["configMap"], source["configMap"]["name"]
                )
            if "secret" in source:
                s = source["secret"]
                yield from _volume_items(holder, "Secret", s, s.get("secretName") or s["name"])
    for pull in spec.get("imagePullSecrets") or []:
        yield Reference(holder, "Secret", pull["name"], None)


def _volume_items(holder: str, kind: str, source: Mapping[str, Any], name: str) -> Iterator[Reference]:
    optional = bool(source.get("optional"))
    items = source.get("items") or []
    if not items:
        yield Reference(holder, kind, name, None, optional)
    for item in items:
        yield Reference(holder, kind, name, item["key"], optional)


def _secret_key_selectors(value: Any) -> Iterator[tuple[str, str]]:
    """Every SecretKeySelector ({name, key}) anywhere in a prometheus-operator object's spec."""
    if isinstance(value, dict):
        if set(value) <= {"name", "key", "optional"} and {"name", "key"} <= set(value):
            yield str(value["name"]), str(value["key"])
        for child in value.values():
            yield from _secret_key_selectors(child)
    elif isinstance(value, list):
        for child in value:
            yield from _secret_key_selectors(child)


def references(ctx: Context) -> Iterator[Reference]:
    for template in ctx.templates:
        yield from _pod_references(template.name, template.spec)
    for ingress in of_kind(ctx.docs, "Ingress"):
        issued = any(a in (ingress["metadata"].get("annotations") or {}) for a in CERT_MANAGER)
        for tls in ingress["spec"].get("tls") or []:
            if "secretName" in tls and not issued:
                yield Reference(ref(ingress), "Secret", tls["secretName"], None)
    for config in of_kind(ctx.docs, "AlertmanagerConfig"):
        for name, key in _secret_key_selectors(config["spec"]):
            yield Reference(ref(config), "Secret", name, key)


def _rendered(ctx: Context, kind: str) -> dict[str, set[str]]:
    out = {}
    for doc in of_kind(ctx.docs, kind):
        keys = (
            set(doc.get("data") or {}) | set(doc.get("binaryData") or {}) | set(doc.get("stringData") or {})
        )
        out[doc["metadata"]["name"]] = keys
    return out


def _provided(ctx: Context, kind: str) -> dict[str, set[str]]:
    section = ctx.provided.get("secrets" if kind == "Secret" else "configmaps") or {}
    return {name: set(entry.get("keys") or []) for name, entry in section.items()}


def check(ctx: Context) -> list[Problem]:
    problems = []
    known = {kind: (_rendered(ctx, kind), _provided(ctx, kind)) for kind in ("ConfigMap", "Secret")}
    for r in references(ctx):
        if r.optional:
            continue
        rendered, provided = known[r.kind]
        keys = rendered.get(r.name, provided.get(r.name))
        what = f"{r.kind} {r.name}" + (f" key {r.key}" if r.key else "")
        if keys is None:
            problems.append(
                Problem(
                    RULE,
                    r.holder,
                    f"references {what}: neither rendered nor listed in provided-by-cluster.yaml",
                )
            )
        elif r.key is not None and r.key not in keys:
            origin = "rendered" if r.name in rendered else "listed in provided-by-cluster.yaml"
            problems.append(
                Problem(RULE, r.holder, f"references {what}: the {origin} {r.kind} has no such key")
            )
    return problems
