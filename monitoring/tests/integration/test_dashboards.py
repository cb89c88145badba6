"""The committed dashboard JSON is what the generator writes, reads only the declared datasource, names only metrics
the contract defines, filters every selector by the namespace variable, and every PromQL expression in it parses
(promtool, as a recording rule)."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from forkcast_contract import metric_names
from forkcast_monitoring import dashboards, manifest_config

COMMITTED = Path(__file__).parents[2] / "dashboards"
# The copy kustomize turns into the Grafana sidecar's ConfigMap (it reads files only under its own folder).
PROVISIONED = manifest_config.MANIFESTS / manifest_config.OBSERVABILITY / "dashboards"
NAMESPACE_FILTER = f'namespace="${dashboards.NAMESPACE_VAR}"'
# PromQL words that are followed by neither a selector nor a call: binary operators and modifiers.
KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "group_left",
    "group_right",
    "on",
    "ignoring",
    "by",
    "without",
}


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
        " --out manifests/observability/dashboards/"
    )


@pytest.mark.parametrize("folder", [COMMITTED, PROVISIONED], ids=["monitoring", "manifests"])
def test_every_committed_dashboard_is_generated(folder: Path) -> None:
    assert {p.name for p in folder.glob("*.json")} == set(dashboards.DASHBOARDS)


def test_the_configmap_carries_every_dashboard_for_the_grafana_sidecar() -> None:
    (configmap,) = [o for o in manifest_config.render_observability() if manifest_config.is_dashboard(o)]
    assert configmap["metadata"]["labels"][manifest_config.DASHBOARD_LABEL] == "1"
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert {k: json.loads(v) for k, v in configmap["data"].items()} == {
        name: json.loads(dashboards.render(name)) for name in dashboards.DASHBOARDS
    }


def test_the_namespace_variable_opens_on_the_prod_namespace() -> None:
    board = load("forkcast-overview.json")
    (var,) = [v for v in board["templating"]["list"] if v["name"] == dashboards.NAMESPACE_VAR]
    assert (var["type"], var["query"]) == ("query", dashboards.NAMESPACE_QUERY)
    assert var["datasource"] == {"type": "prometheus", "uid": f"${{{dashboards.DATASOURCE_VAR}}}"}
    assert var["current"]["value"] == dashboards.DEFAULT_NAMESPACE == manifest_config.load("prod").namespace


def unfiltered_selectors(expr: str) -> list[str]:
    """The series selectors of ``expr`` without the matcher ``namespace="$namespace"`` (a panel that would sum the
    series of every forkcast namespace). Grouping clauses and range durations are dropped first; a name followed by
    "(" is a function or aggregation, not a selector."""
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    found = []
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)?\s*(\{[^}]*\})?", text):
        name, labels = match.group(1), match.group(2)
        if name is None and labels is None:
            continue
        if labels is None and (name in KEYWORDS or text[match.end() :].lstrip().startswith("(")):
            continue
        matchers = [m.strip() for m in (labels or "{}")[1:-1].split(",")]
        if NAMESPACE_FILTER not in matchers:
            found.append(match.group(0).strip())
    return found


def namespace_filter_problems(board: dict[str, Any]) -> list[str]:
    """ "<panel title>: <selector>" for every selector of a panel query that lacks the namespace filter."""
    return [
        f"{p['title']}: {s}"
        for p in panels(board)
        for t in p.get("targets", [])
        for s in unfiltered_selectors(t["expr"])
    ]


@pytest.mark.parametrize("name", sorted(dashboards.DASHBOARDS))
def test_every_panel_query_filters_by_the_namespace_variable(name: str) -> None:
    board = load(name)
    assert len(exprs(board)) > 10
    assert namespace_filter_problems(board) == []


def test_the_namespace_filter_check_names_a_query_without_it() -> None:
    board = load("forkcast-overview.json")
    (target,) = [t for p in panels(board) if p["title"].startswith("Model age") for t in p["targets"]]
    target["expr"] = target["expr"].replace(NAMESPACE_FILTER, "")
    assert namespace_filter_problems(board) == [
        "Model age: forkcast_inference_model_published_timestamp_seconds{}"
    ]
    assert unfiltered_selectors(
        'sum(rate(forkcast_gateway_requests_total{status_class="5xx"}[5m]))'
        ' / on (le) group_left () sum(rate(forkcast_gateway_requests_total{namespace="$namespace"}[5m]))'
        " > bool 0 and up"
    ) == ['forkcast_gateway_requests_total{status_class="5xx"}', "up"]


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


@pytest.mark.usefixtures("promtool")
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


@pytest.mark.usefixtures("promtool")
def test_promtool_rejects_a_broken_expression(tmp_path: Path) -> None:
    """The check above can fail: promtool refuses an expression with a syntax error."""
    path = tmp_path / "rules.yml"
    rule = {"record": "dashboard:broken", "expr": "sum by (le) (rate(forkcast_online_auc[5m])"}
    path.write_text(yaml.safe_dump({"groups": [{"name": "d", "rules": [rule]}]}))
    result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, timeout=60)
    assert result.returncode != 0


def test_auc_floor_line_is_the_alerts_floor() -> None:
    """The panel's floor and the recording rule OnlineAucLow compares against (in the PrometheusRule that
    manifests/observability renders) are one expression, the panel's filtered to the chosen namespace."""
    rules = {
        r["record"]: r["expr"]
        for g in manifest_config.load("dev").rule_groups
        for r in g["rules"]
        if "record" in r
    }
    assert rules["forkcast:online_auc_floor"].strip() == dashboards.auc_floor()
    assert dashboards.auc_floor(dashboards.selector()) in exprs(load("forkcast-overview.json"))
