"""Argo CD leaves to the HorizontalPodAutoscalers what they own: the replicas of their scale targets.

With selfHeal, an Application whose manifests hold ``spec.replicas`` of an HPA's target resets it on every sync and
the two controllers fight. For every HPA in an overlay's render whose target sets ``spec.replicas``, the
Application syncing that overlay must ignore /spec/replicas of that target (ignoreDifferences, group + kind +
name) and sync with ``RespectIgnoreDifferences=true``, without which the ignored field is still applied on sync
(https://argo-cd.readthedocs.io/en/stable/user-guide/sync-options/#respect-ignore-difference-configs).

And Argo CD keeps what old pods still need: a rendered ConfigMap a pod template references carries the sync option
``Prune=false`` (https://argo-cd.readthedocs.io/en/stable/user-guide/sync-options/#no-prune-resources). Settings
ConfigMaps are hashed, so a settings change renames them; pruning the old name would leave the stable ReplicaSet of
a canary (or a Deployment's previous one) unable to create pods on abort, scale-up or a lost node.
"""

from __future__ import annotations

from typing import Any

from forkcast_delivery.checks import Problem
from forkcast_delivery.context import Context
from forkcast_delivery.objects import of_kind, ref

RULE = "argocd"
REPLICAS_POINTERS = ("/spec/replicas",)
REPLICAS_JQ = (".spec.replicas",)


def _syncs(app: dict[str, Any], ctx: Context) -> bool:
    sources = [app["spec"].get("source"), *(app["spec"].get("sources") or [])]
    try:
        wanted = ctx.overlay_dir.resolve().relative_to(ctx.root.resolve()).as_posix()
    except ValueError:  # an overlay outside the repository (a test's scratch copy) is synced by nothing
        return False
    return any(s and str(s.get("path", "")).strip("/") == wanted for s in sources)


def _ignores(app: dict[str, Any], group: str, kind: str, name: str) -> bool:
    for entry in app["spec"].get("ignoreDifferences") or []:
        if entry.get("kind") != kind or entry.get("group", "") != group:
            continue
        if entry.get("name") not in (None, name):
            continue
        if set(REPLICAS_POINTERS) & set(entry.get("jsonPointers") or []):
            return True
        if set(REPLICAS_JQ) & set(entry.get("jqPathExpressions") or []):
            return True
    return False


def _unprunable(ctx: Context) -> list[Problem]:
    from forkcast_delivery.checks.references import references

    rendered = {d["metadata"]["name"]: d for d in of_kind(ctx.docs, "ConfigMap")}
    problems = []
    for r in references(ctx):
        doc = rendered.get(r.name) if r.kind == "ConfigMap" else None
        if doc is None:
            continue
        options = str((doc["metadata"].get("annotations") or {}).get("argocd.argoproj.io/sync-options", ""))
        if "Prune=false" not in options.split(","):
            problems.append(
                Problem(
                    RULE, ref(doc), f"referenced by {r.holder} but prunable (no sync-options Prune=false)"
                )
            )
    return problems


def check(ctx: Context) -> list[Problem]:
    return sorted(set(_hpa_replicas(ctx) + _unprunable(ctx)))


def _hpa_replicas(ctx: Context) -> list[Problem]:
    apps = [a for a in ctx.applications if _syncs(a, ctx)]
    if not apps:
        return [
            Problem(RULE, ctx.render.overlay, "no Argo CD Application in deploy/argocd syncs this overlay")
        ]
    problems = []
    for hpa in of_kind(ctx.docs, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        group = target["apiVersion"].split("/")[0] if "/" in target["apiVersion"] else ""
        docs = [
            d for d in ctx.docs if d["kind"] == target["kind"] and d["metadata"]["name"] == target["name"]
        ]
        if not docs:
            problems.append(
                Problem(RULE, ref(hpa), f"scales {target['kind']}/{target['name']}, not in the render")
            )
            continue
        if "replicas" not in docs[0]["spec"]:
            continue
        for app in apps:
            if not _ignores(app, group, target["kind"], target["name"]):
                problems.append(
                    Problem(
                        RULE,
                        ref(app),
                        f"does not ignore /spec/replicas of {target['kind']}/{target['name']} (owned by {ref(hpa)})",
                    )
                )
            options = (app["spec"].get("syncPolicy") or {}).get("syncOptions") or []
            if "RespectIgnoreDifferences=true" not in options:
                problems.append(
                    Problem(
                        RULE,
                        ref(app),
                        "syncs without RespectIgnoreDifferences=true: ignored replicas still apply",
                    )
                )
    return sorted(set(problems))
