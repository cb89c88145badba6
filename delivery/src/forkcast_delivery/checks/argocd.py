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

And the AppProject of each Application admits what it syncs: the repository, the destination namespace and every
kind of the render (https://argo-cd.readthedocs.io/en/stable/user-guide/projects/); Argo CD refuses the sync
otherwise.

An overlay that is an alternative to another in the same namespace (manifests/overlays/prod-cluster: prod with the
features Redis as a Redis Cluster) names, in its kustomization's ``forkcast.io/synced-by`` annotation, the
Application that syncs it once its ``source.path`` is pointed there: every rule here then holds it to that
Application, as if it synced it already.

An overlay whose kustomization says it is deployed by something else (``metadata.annotations``
``forkcast.io/deployed-by``, e.g. ``forkcast-local`` for manifests/overlays/local, which the local platform runs
on 127.0.0.1) needs no Application; every other overlay does.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

from forkcast_delivery.checks.problem import Problem
from forkcast_delivery.context import Context
from forkcast_delivery.objects import of_kind, ref
from forkcast_delivery.render import Doc

RULE = "argocd"
DEPLOYED_BY = "forkcast.io/deployed-by"
SYNCED_BY = "forkcast.io/synced-by"
REPLICAS_POINTERS = ("/spec/replicas",)
REPLICAS_JQ = (".spec.replicas",)


def _syncs(app: dict[str, Any], ctx: Context) -> bool:
    if app["metadata"]["name"] == _annotation(ctx, SYNCED_BY):
        return True
    sources = [app["spec"].get("source"), *(app["spec"].get("sources") or [])]
    try:
        wanted = ctx.overlay_dir.resolve().relative_to(ctx.root.resolve()).as_posix()
    except ValueError:  # an overlay outside the repository (a test's scratch copy) is synced by nothing
        return False
    return any(s and str(s.get("path", "")).strip("/") == wanted for s in sources)


def _annotation(ctx: Context, name: str) -> str | None:
    """An annotation of the overlay's kustomization.yaml (its ``metadata``, which kustomize ignores)."""
    kustomization = yaml.safe_load((ctx.overlay_dir / "kustomization.yaml").read_text()) or {}
    value = ((kustomization.get("metadata") or {}).get("annotations") or {}).get(name)
    return None if value is None else str(value)


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


def project_refusals(app: Doc, project: Doc, docs: Iterable[Doc]) -> list[str]:
    """Why ``project`` would refuse to sync ``docs`` as ``app`` asks (empty: it admits all of it)."""
    spec, allowed, name = app["spec"], project["spec"], project["metadata"]["name"]
    problems = []
    if spec["project"] != name:
        problems.append(f"the Application is in project {spec['project']}, not {name}")
    repos = allowed.get("sourceRepos") or []
    if "*" not in repos and spec["source"]["repoURL"] not in repos:
        problems.append(f"project {name} does not admit repository {spec['source']['repoURL']}")
    dest = spec["destination"]
    if not any(
        d.get("server") in ("*", dest.get("server")) and d.get("namespace") in ("*", dest.get("namespace"))
        for d in allowed.get("destinations") or []
    ):
        problems.append(f"project {name} does not admit namespace {dest.get('namespace')}")
    whitelist = allowed.get("namespaceResourceWhitelist") or []
    kinds = sorted({(d["apiVersion"].rpartition("/")[0], d["kind"]) for d in docs})
    problems += [
        f"project {name} does not admit {group or 'core'}/{kind}"
        for group, kind in kinds
        if not any(w["group"] in ("*", group) and w["kind"] in ("*", kind) for w in whitelist)
    ]
    return problems


def _admitted(ctx: Context) -> list[Problem]:
    projects = {p["metadata"]["name"]: p for p in ctx.projects}
    problems = []
    for app in (a for a in ctx.applications if _syncs(a, ctx)):
        project = projects.get(app["spec"]["project"])
        if project is None:
            problems.append(
                Problem(RULE, ref(app), f"its project {app['spec']['project']} is not in deploy/argocd")
            )
            continue
        problems += [Problem(RULE, ref(app), reason) for reason in project_refusals(app, project, ctx.docs)]
    return problems


def check(ctx: Context) -> list[Problem]:
    return sorted(set(_hpa_replicas(ctx) + _unprunable(ctx) + _admitted(ctx)))


def deployed_by(ctx: Context) -> str:
    """Who deploys the overlay: its kustomization's ``forkcast.io/deployed-by`` annotation, else Argo CD."""
    return _annotation(ctx, DEPLOYED_BY) or "argocd"


def _hpa_replicas(ctx: Context) -> list[Problem]:
    apps = [a for a in ctx.applications if _syncs(a, ctx)]
    if not apps and deployed_by(ctx) != "argocd":
        return []
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
