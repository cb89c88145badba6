"""Project-side checks of the Argo resources (always run, no ../shared needed): the canary's steps, the analysis
wiring between the Rollout and its AnalysisTemplates, queries that only read metrics the services export, missing
data that stays Inconclusive, PromQL that promtool parses (when installed), and the Argo CD Applications.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from forkcast_contract import metric_names
from forkcast_inference import metrics as inference_metrics

ROOT = Path(__file__).resolve().parents[2]
# Series a histogram / counter / info exports under its registered name.
SUFFIXES = ("", "_bucket", "_count", "_sum", "_total", "_info")


def load(path: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((ROOT / path).read_text()) if d]


def rollout() -> dict[str, Any]:
    (doc,) = load("rollouts/inference-rollout.yaml")
    return doc


def templates() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in load("rollouts/analysis-templates.yaml")}


def known_series() -> set[str]:
    names = {
        v
        for m in (inference_metrics, metric_names)
        for k, v in vars(m).items()
        if k.isupper() and isinstance(v, str)
    }
    return {n + s for n in names for s in SUFFIXES}


def test_canary_steps_follow_the_release_plan() -> None:
    canary = rollout()["spec"]["strategy"]["canary"]
    steps = canary["steps"]
    weights = [s["setWeight"] for s in steps if "setWeight" in s]
    assert weights == [10, 25, 50, 100]
    kinds = [next(iter(s)) for s in steps]
    assert kinds[:3] == ["setWeight", "pause", "analysis"], "10 % -> pause -> analysis before widening"
    assert canary["abortScaleDownDelaySeconds"] > 0
    assert "antiAffinity" in canary
    assert canary["analysis"]["startingStep"] == 1, "background analysis starts with the first canary pods"
    base = {d["metadata"]["name"] for d in load("manifests/base/inference.yaml") if d["kind"] == "Service"}
    assert {canary["canaryService"], canary["stableService"]} <= base


def _references() -> list[dict[str, Any]]:
    canary = rollout()["spec"]["strategy"]["canary"]
    refs = [canary["analysis"]]
    refs += [s["analysis"] for s in canary["steps"] if "analysis" in s]
    return refs


def test_every_referenced_template_exists_and_gets_its_arguments() -> None:
    available = templates()
    used: set[str] = set()
    for ref in _references():
        passed = {a["name"] for a in ref.get("args", [])}
        for t in ref["templates"]:
            name = t["templateName"]
            assert name in available, f"the Rollout names a missing AnalysisTemplate {name}"
            used.add(name)
            needed = {a["name"] for a in available[name]["spec"]["args"] if "value" not in a}
            assert needed <= passed, f"{name} needs args {needed - passed}"
    assert used == set(available), "every AnalysisTemplate is used by the Rollout"


@pytest.mark.parametrize("name", sorted(templates()))
def test_missing_data_is_inconclusive_not_success(name: str) -> None:
    for metric in templates()[name]["spec"]["metrics"]:
        assert set(metric["provider"]) == {"prometheus"}
        success, failure = metric["successCondition"], metric["failureCondition"]
        # An empty result (too few requests / samples) must satisfy neither condition.
        assert success.startswith("len(result) > 0 &&") and failure.startswith("len(result) > 0 &&")
        assert metric.get("failureLimit", 0) <= 1, "one failed measurement aborts the canary"
        query = metric["provider"]["prometheus"]["query"]
        assert re.search(r"and on\(\)\s*\n?.*>= \{\{args\.min-(requests|samples)\}\}", query), (
            f"{name}: no minimum sample count guards the query"
        )
        assert '{{args.canary-hash}}"' in query or "{{args.canary-hash}}|" in query


@pytest.mark.parametrize("name", sorted(templates()))
def test_queries_read_only_exported_metrics(name: str) -> None:
    known = known_series()
    for metric in templates()[name]["spec"]["metrics"]:
        query = metric["provider"]["prometheus"]["query"]
        used = set(re.findall(r"\b(forkcast_[a-z0-9_]+)", query))
        assert used, f"{name} reads no forkcast metric"
        assert used <= known, f"{name} reads unknown metrics {used - known}"


def _substituted(query: str, spec: dict[str, Any]) -> str:
    values = {a["name"]: a.get("value", "x") for a in spec["args"]}
    values.update({"namespace": "forkcast", "canary-hash": "abc123", "stable-hash": "def456"})
    return re.sub(r"\{\{args\.([\w-]+)\}\}", lambda m: values[m.group(1)], query)


def test_promql_parses_with_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package `prometheus`); the PromQL is not parsed here")
    rules = [
        {
            "record": f"check:{name}:{m['name']}".replace("-", "_"),
            "expr": _substituted(m["provider"]["prometheus"]["query"], t["spec"]),
        }
        for name, t in templates().items()
        for m in t["spec"]["metrics"]
    ]
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "analysis", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        yaml.safe_dump({"groups": [{"name": "b", "rules": [{"record": "b", "expr": "sum(rate(x[2m])"}]}]})
    )
    assert (
        subprocess.run([promtool, "check", "rules", str(broken)], capture_output=True, check=False).returncode
        != 0
    )


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_argocd_application_syncs_its_overlay(overlay: str) -> None:
    (app,) = load(f"deploy/argocd/app-{overlay}.yaml")
    (project,) = load("deploy/argocd/project.yaml")
    spec = app["spec"]
    assert spec["project"] == project["metadata"]["name"]
    assert (ROOT / spec["source"]["path"] / "kustomization.yaml").is_file()
    assert spec["source"]["repoURL"] in project["spec"]["sourceRepos"]
    assert {
        "server": spec["destination"]["server"],
        "namespace": spec["destination"]["namespace"],
    } in project["spec"]["destinations"]
    kustomization = yaml.safe_load((ROOT / spec["source"]["path"] / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == spec["destination"]["namespace"]
    policy = spec["syncPolicy"]
    assert policy["automated"] == {"prune": True, "selfHeal": True}
    assert policy["retry"]["limit"] > 0 and policy["retry"]["backoff"]["factor"] > 1
