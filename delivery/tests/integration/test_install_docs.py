"""docs/operations.md's install section names what the manifests assume: every Secret (and key) of
provided-by-cluster.yaml, and the label kube-prometheus-stack must select the render's monitors by."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from forkcast_delivery.context import Context

ROOT = Path(__file__).resolve().parents[3]


def install_section() -> str:
    text = (ROOT / "docs" / "operations.md").read_text()
    return text.split("## Installing on a cluster", 1)[1].split("\n## ", 1)[0]


def missing_secrets(section: str, provided: dict[str, dict[str, list[str]]]) -> list[str]:
    missing = []
    for name, entry in provided.items():
        found = re.search(rf"`{re.escape(name)}`\s*\(([^)]*)\)", section)
        if found is None:
            missing.append(name)
            continue
        missing += [f"{name}/{key}" for key in entry["keys"] if f"`{key}`" not in found.group(1)]
    return missing


def test_every_provided_secret_and_key_is_named() -> None:
    provided = yaml.safe_load((ROOT / "manifests" / "provided-by-cluster.yaml").read_text())["secrets"]
    assert missing_secrets(install_section(), provided) == []


def test_twin_a_secret_or_key_left_out_is_named() -> None:
    section = install_section().replace("`forkcast-gitlab-trigger` (`token`)", "").replace("`exporter`", "")
    provided = yaml.safe_load((ROOT / "manifests" / "provided-by-cluster.yaml").read_text())["secrets"]
    assert missing_secrets(section, provided) == ["forkcast-redis-acl/exporter", "forkcast-gitlab-trigger"]


def test_the_selector_values_match_the_rendered_monitors(contexts: dict[str, Context]) -> None:
    section = install_section()
    for ctx in contexts.values():
        for doc in ctx.docs:
            if doc["kind"] in ("PodMonitor", "ServiceMonitor", "PrometheusRule", "AlertmanagerConfig"):
                release = doc["metadata"]["labels"]["release"]
                assert f"{{matchLabels: {{release: {release}}}}}" in section, doc["metadata"]["name"]
