"""The served log's daily upkeep as rendered (CronJob lake-maintain, manifests/base/lake-maintain.yaml): it runs
`forkcast-lake maintain` from the lake-compact image once a day, never two at once, with the lake's S3 credentials
and nothing else, hardened as lake-compact is, and its settings validate in the environment the render gives it."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from forkcast_delivery.render import render

from forkcast_lake.cli import SUBCOMMANDS
from forkcast_lake.retention import RetentionSettings

ROOT = Path(__file__).resolve().parents[2]


@cache
def _docs(overlay: str) -> list[dict[str, Any]]:
    return list(render(ROOT / "manifests" / "overlays" / overlay).docs)


def _one(overlay: str, kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in _docs(overlay) if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_the_cronjob_runs_maintain_daily_alone_with_the_lake_credentials(overlay: str) -> None:
    cron = _one(overlay, "CronJob", "lake-maintain")
    spec = cron["spec"]
    minute, hour, *every = spec["schedule"].split()
    assert every == ["*", "*", "*"] and minute.isdigit() and hour.isdigit()  # once a day
    assert spec["concurrencyPolicy"] == "Forbid"
    pod = spec["jobTemplate"]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    compact = _one(overlay, "Deployment", "lake-compact")["spec"]["template"]
    (compactor,) = compact["spec"]["containers"]
    assert container["image"] == compactor["image"]  # the forkcast-lake image, the same tag
    assert container["command"] == ["forkcast-lake", "maintain"] and "maintain" in SUBCOMMANDS
    secrets = [e["secretRef"]["name"] for e in container["envFrom"] if "secretRef" in e]
    assert secrets == ["forkcast-s3-lake"]
    assert not [e for e in container.get("env", []) if "valueFrom" in e]  # no Redis URL, no other Secret
    assert pod["spec"]["securityContext"] == compact["spec"]["securityContext"]
    assert container["securityContext"] == compactor["securityContext"]
    assert pod["spec"]["automountServiceAccountToken"] is False
    # Its NetworkPolicy's selector.
    assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == "lake-maintain"


def test_its_network_policy_admits_s3_and_dns_only() -> None:
    flows = yaml.safe_load((ROOT / "manifests" / "flows.yaml").read_text())["flows"]
    mine = {(f["to"], f["port"]) for f in flows if "lake-maintain" in (f["from"], f["to"])}
    assert mine == {("internet", 443), ("kube-dns", 53)}
    policies = [
        d
        for d in _docs("prod")
        if d["kind"] == "NetworkPolicy"
        and d["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") == "lake-maintain"
    ]
    assert [p["spec"]["policyTypes"] for p in policies] == [["Egress"]]  # no ingress rule: nothing reaches it


def test_its_settings_validate_in_the_rendered_environment() -> None:
    """RetentionSettings from the rendered forkcast-settings ConfigMap and the Secret's keys (values stand in):
    production, and a vacuum retention a cluster may use."""
    cron = _one("prod", "CronJob", "lake-maintain")
    (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    (config_name,) = [e["configMapRef"]["name"] for e in container["envFrom"] if "configMapRef" in e]
    env = {str(k): str(v) for k, v in _one("prod", "ConfigMap", config_name)["data"].items()}
    env |= {e["name"]: e["value"] for e in container.get("env", [])}
    env |= {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret"}
    settings = RetentionSettings(**env)
    assert settings.environment == "production" and settings.vacuum_retention_hours >= 1
    assert settings.lake_uri.startswith("s3://")
