"""The cluster-wide rules (manifests/observability) name forkcast's namespaces by regex where a series may come from
another application (`up`, the Argo Rollouts controller's rollout_info): each regex must be exactly the set of the
overlays' namespaces, so a new overlay is not left unwatched and nobody else's targets page forkcast."""

from __future__ import annotations

import re
from typing import Any

from forkcast_delivery.context import Context

_NAMESPACE_REGEX = re.compile(r'(?:exported_)?namespace=~"([^"]+)"')


def namespace_sets(rule_docs: tuple[dict[str, Any], ...]) -> dict[str, set[frozenset[str]]]:
    """Per alert or record name, the namespace sets its regexes name."""
    found: dict[str, set[frozenset[str]]] = {}
    for doc in rule_docs:
        if doc["kind"] != "PrometheusRule":
            continue
        for group in doc["spec"]["groups"]:
            for rule in group["rules"]:
                sets = {frozenset(m.split("|")) for m in _NAMESPACE_REGEX.findall(str(rule["expr"]))}
                if sets:
                    found[rule.get("alert") or rule["record"]] = sets
    return found


def mismatches(rule_docs: tuple[dict[str, Any], ...], namespaces: set[str]) -> list[str]:
    return sorted(
        f"{name}: {sorted(s)}"
        for name, sets in namespace_sets(rule_docs).items()
        for s in sets
        if s != namespaces
    )


def test_every_namespace_regex_names_exactly_the_overlays(contexts: dict[str, Context]) -> None:
    namespaces = {ctx.render.namespace for ctx in contexts.values()}
    docs = next(iter(contexts.values())).observability
    assert set(namespace_sets(docs)) >= {
        "TargetDown",
        "ForkcastRolloutDegraded",
        "ForkcastRolloutPausedTooLong",
    }
    assert mismatches(docs, namespaces) == []


def test_twin_a_new_overlay_namespace_is_named(contexts: dict[str, Context]) -> None:
    namespaces = {ctx.render.namespace for ctx in contexts.values()} | {"forkcast-staging"}
    docs = next(iter(contexts.values())).observability
    problems = mismatches(docs, namespaces)
    assert "TargetDown: ['forkcast', 'forkcast-dev', 'forkcast-local']" in problems
    assert any(p.startswith("ForkcastRolloutDegraded:") for p in problems)
