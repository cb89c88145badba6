"""The committed dashboard JSON is what the generator writes, reads only the declared datasource, names only metrics
the contract defines, and every PromQL expression in it parses (promtool, as a recording rule)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from forkcast_contract import metric_names
from forkcast_monitoring import dashboards, manifest_config

COMMITTED = Path(__file__).parents[1] / "dashboards"
# The copy kustomize turns into the Grafana sidecar's ConfigMap (it reads files only under its own folder).
PROVISIONED = Path(__file__).parents[2] / "manifests" / "base" / "dashboards"


def load(name: str) -> dict[str, Any]:
    return dict(json.loads((COMMITTED / name).read_text()))


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in board["panels"]:
        yield p
        yield from p.get("panels", [])  # panels nested in collapsed rows


def exprs(board: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in panels(board) for t in p.get("targets", [])]


@pytest.mark.parametrize("folder", [COMMITTED, PROVISIONED], ids=["monitoring", "manifests"])
@pytest.mark.parametrize("name", sorted(dashboards.DASHBOARDS))
def test_committed_json_is_what_the_generator_writes(name: str, folder: Path) -> None:
    assert (folder / name).read_bytes() == dashboards.render(name).encode(), (
        "regenerate: python -m forkcast_monitoring.dashboards --out monitoring/dashboards/"
        " --out manifests/base/dashboards/"
    )


@pytest.mark.parametrize("folder", [COMMITTED, PROVISIONED], ids=["monitoring", "manifests"])
def test_every_committed_dashboard_is_generated(folder: Path) -> None:
    assert {p.name for p in folder.glob("*.json")} == set(dashboards.DASHBOARDS)


def test_the_configmap_carries_every_dashboard_for_the_grafana_sidecar() -> None:
    doc = yaml.safe_load((PROVISIONED / "kustomization.yaml").read_text())
    assert doc["generatorOptions"]["labels"] == {"grafana_dashboard": "1"}
    (generator,) = doc["configMapGenerator"]
    assert sorted(generator["files"]) == sorted(dashboards.DASHBOARDS)


@pytest.mark.parametrize("name", sorted(dashboards.DASHBOARDS))
def test_every_panel_and_target_reads_the_declared_datasource(name: str) -> None:
    board = load(name)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    var = variables[dashboards.DATASOURCE_VAR]
    assert (var["type"], var["query"]) == ("datasource", "prometheus")
    assert var["current"]["value"] == dashboards.DATASOURCE_UID
    ref = {"type": "prometheus", "uid": f"${{{dashboards.DATASOURCE_VAR}}}"}
    data_panels = [p for p in panels(board) if p["type"] != "row"]
    assert data_panels
    for p in data_panels:
        assert p["datasource"] == ref, p["title"]
        assert p["targets"], f"{p['title']} has no query"
        for t in p["targets"]:
            assert t["datasource"] == ref, p["title"]
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), "duplicate panel ids"


@pytest.mark.parametrize("name", sorted(dashboards.DASHBOARDS))
def test_every_metric_a_panel_reads_is_defined_in_the_contract(name: str) -> None:
    defined = {v for k, v in vars(metric_names).items() if k.isupper() and isinstance(v, str)}
    exposed = set()
    for metric in defined:  # what prometheus-client exposes for a counter, histogram or info of that name
        exposed |= {metric, *(f"{metric}{s}" for s in ("_total", "_bucket", "_count", "_sum", "_info"))}
    used = {m for e in exprs(load(name)) for m in re.findall(r"\b(forkcast_[a-z0-9_]+)", e)}
    assert used, "no metric found in the dashboard"
    assert used <= exposed, f"panels read metrics nobody defines: {sorted(used - exposed)}"
    # Every service's headline metrics are on the overview: a renamed constant cannot silently empty a panel.
    assert {
        metric_names.ONLINE_AUC,
        metric_names.DRIFT_FEATURE_PSI,
        f"{metric_names.INFERENCE_SERVED}_info",
    } <= used


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool missing (Debian package prometheus)")
@pytest.mark.parametrize("name", sorted(dashboards.DASHBOARDS))
def test_every_expression_is_valid_promql(name: str, tmp_path: Path) -> None:
    rules = [{"record": f"dashboard:expr_{i}", "expr": e} for i, e in enumerate(exprs(load(name)))]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_promtool_rejects_a_broken_expression(tmp_path: Path) -> None:
    """The check above can fail: promtool refuses an expression with a syntax error."""
    if shutil.which("promtool") is None:
        pytest.skip("promtool missing (Debian package prometheus)")
    path = tmp_path / "rules.yml"
    rule = {"record": "dashboard:broken", "expr": "sum by (le) (rate(forkcast_online_auc[5m])"}
    path.write_text(yaml.safe_dump({"groups": [{"name": "d", "rules": [rule]}]}))
    result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, timeout=60)
    assert result.returncode != 0


def test_auc_floor_line_is_the_alerts_floor() -> None:
    """The panel's floor and the recording rule OnlineAucLow compares against (in the rendered PrometheusRule)
    are one expression."""
    rules = {
        r["record"]: r["expr"]
        for g in manifest_config.load("dev").rule_groups
        for r in g["rules"]
        if "record" in r
    }
    assert rules["forkcast:online_auc_floor"].strip() == dashboards.AUC_FLOOR
    assert dashboards.AUC_FLOOR in exprs(load("forkcast-overview.json"))
