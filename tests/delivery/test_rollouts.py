"""Project-side checks of the Argo resources (always run, no ../shared needed): the canary's steps, the analysis
wiring between the Rollout and its AnalysisTemplates, queries that only read metrics the services export, missing
data that stays Inconclusive, PromQL that promtool parses (when installed), the online-AUC analysis run by a real
Prometheus on series from the online-AUC job's own Window (one steering key pauses it, never decides it), and the
Argo CD Applications; and,
each with a twin that breaks the input on purpose: the progress deadline abort, Argo Rollouts' basic-canary replica
arithmetic (every setWeight step a distinct canary pod count at every size the HPA allows), Argo CD leaving
HPA-owned replicas alone, hashed settings ConfigMaps referenced by their hashed names, and analysis limits,
namespace filters and AUC windows that mean what their comments say.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from forkcast_delivery import render as delivery_render
from forkcast_delivery.checks.metrics import contract_name, metric_names_in
from forkcast_delivery.checks.references import references
from forkcast_delivery.context import Context
from forkcast_delivery.render import Render

from forkcast_contract import metric_names
from forkcast_devservers.servers.prometheus import Prometheus
from forkcast_local.rehearsal import spec as spec_mod
from forkcast_local.rehearsal.analysis import evaluate
from forkcast_local.rehearsal.conditions import parse as parse_condition
from forkcast_monitoring.window import Estimate, Window

ROOT = Path(__file__).resolve().parents[2]
# Series a histogram / counter / info exports under its registered name.


def load(path: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((ROOT / path).read_text()) if d]


def rollout() -> dict[str, Any]:
    (doc,) = load("rollouts/inference-rollout.yaml")
    return doc


def templates() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in load("rollouts/analysis-templates.yaml")}


def test_canary_steps_follow_the_release_plan() -> None:
    canary = rollout()["spec"]["strategy"]["canary"]
    steps = canary["steps"]
    weights = [s["setWeight"] for s in steps if "setWeight" in s]
    assert weights == [10, 25, 50, 100]
    kinds = [next(iter(s)) for s in steps]
    assert kinds[:3] == ["setWeight", "pause", "analysis"], "10 % -> pause -> analysis before widening"
    # Basic canary (no trafficRouting): abortScaleDownDelaySeconds would do nothing (argo-rollouts
    # utils/defaults/defaults.go GetAbortScaleDownDelaySecondsOrDefault), so it must not pretend to.
    assert "trafficRouting" not in canary and "abortScaleDownDelaySeconds" not in canary
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


def length_guard(condition: str) -> int | None:
    """N of a condition opening with ``len(result) > N &&`` when N covers every ``result[I]`` it reads (None: it
    does not, so a short or empty result could satisfy it or make it an evaluation Error)."""
    m = re.match(r"len\(result\) > (\d+) && ", condition)
    indices = [int(i) for i in re.findall(r"result\[(\d+)\]", condition)]
    return int(m[1]) if m and all(i <= int(m[1]) for i in indices) else None


@pytest.mark.parametrize("name", sorted(templates()))
def test_missing_data_is_inconclusive_not_success(name: str) -> None:
    for metric in templates()[name]["spec"]["metrics"]:
        assert set(metric["provider"]) == {"prometheus"}
        success, failure = metric["successCondition"], metric["failureCondition"]
        # An empty (or, for the two-valued online AUC, half) result must satisfy neither condition.
        assert length_guard(success) is not None and length_guard(failure) is not None, (success, failure)
        assert metric.get("failureLimit", 0) <= 1, "a second failed measurement (in total) aborts the canary"
        query = metric["provider"]["prometheus"]["query"]
        assert re.search(r"and on\(\)\s*\n?.*>= \{\{args\.min-(requests|samples)\}\}", query), (
            f"{name}: no minimum sample count guards the query"
        )
        assert '{{args.canary-hash}}"' in query or "{{args.canary-hash}}|" in query


@pytest.mark.parametrize("name", sorted(templates()))
def test_queries_read_only_exported_metrics(name: str) -> None:
    spec = templates()[name]["spec"]
    for metric in spec["metrics"]:
        # The one reader of metric names in PromQL (an AST, not a regex): the manifests check's.
        used = metric_names_in(_substituted(metric["provider"]["prometheus"]["query"], spec))
        assert used, f"{name} reads no forkcast metric"
        unknown = {n for n in used if contract_name(n) is None}
        assert not unknown, f"{name} reads unknown metrics {unknown}"


def _substituted(query: str, spec: dict[str, Any]) -> str:
    values = {a["name"]: a.get("value", "x") for a in spec["args"]}
    values.update({"namespace": "forkcast", "canary-hash": "abc123", "stable-hash": "def456"})
    return re.sub(r"\{\{args\.([\w-]+)\}\}", lambda m: values[m.group(1)], query)


def test_promql_parses_with_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: run `make system-packages` (Debian package `prometheus`)")
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


# -- progress deadline -------------------------------------------------------------------------------------------


def progress_deadline_problems(doc: dict[str, Any]) -> list[str]:
    """Why a Rollout whose canary never becomes ready would not be aborted in time (empty: it would be).

    progressDeadlineAbort turns "no progress for progressDeadlineSeconds" into an abort (argo-rollouts
    rollout/sync.go evaluateProgressDeadlineAbort); the deadline must outlast the slowest legitimate startup (the
    startup probe's whole budget), or a healthy canary that downloads its model would be aborted.
    """
    spec = doc["spec"]
    problems = []
    if spec.get("progressDeadlineAbort") is not True:
        problems.append("progressDeadlineAbort is not true: a canary that never becomes ready stays Degraded")
    deadline = spec.get("progressDeadlineSeconds", 600)  # Argo Rollouts' default (types.go)
    for c in spec["template"]["spec"]["containers"]:
        probe = c.get("startupProbe")
        if probe is None:
            continue
        budget = probe.get("initialDelaySeconds", 0) + probe.get("periodSeconds", 10) * probe.get(
            "failureThreshold", 3
        )
        if deadline <= budget:
            problems.append(
                f"progressDeadlineSeconds {deadline} <= container {c['name']}'s startup budget {budget} s"
            )
    return problems


def test_a_canary_that_never_becomes_ready_is_aborted() -> None:
    assert progress_deadline_problems(rollout()) == []


def test_twin_progress_deadline_checks_fail_for_a_rollout_left_degraded_or_aborted_too_early() -> None:
    no_abort = copy.deepcopy(rollout())
    del no_abort["spec"]["progressDeadlineAbort"]
    assert [p for p in progress_deadline_problems(no_abort) if p.startswith("progressDeadlineAbort")]
    too_short = copy.deepcopy(rollout())
    too_short["spec"]["progressDeadlineSeconds"] = 120
    assert progress_deadline_problems(too_short) == [
        "progressDeadlineSeconds 120 <= container inference's startup budget 300 s"
    ]


# -- canary replica arithmetic -----------------------------------------------------------------------------------


def basic_canary_counts(replicas: int, weight: int, max_surge: int, max_weight: int = 100) -> tuple[int, int]:
    """(canary, stable) pods Argo Rollouts aims at for ``weight`` without a traffic router.

    A port of approximateWeightedCanaryStableReplicaCounts, which CalculateReplicaCountsForBasicCanary calls for
    the desired counts (github.com/argoproj/argo-rollouts utils/replicaset/canary.go): among ceil and floor of
    replicas*weight/100 canary pods, out of replicas or replicas+1 (when maxSurge > 0), the closest share wins
    (the first listed on a tie); a weight of 1-99 never gives 0 canary pods when more than one pod runs.
    """
    if replicas == 0:
        return 0, 0
    exact = replicas * weight / max_weight
    ceil_c, floor_c = math.ceil(exact), math.floor(exact)

    def tied(total: int) -> bool:
        return math.modf(total * (weight / max_weight))[0] == 0.5

    zero_allowed = weight in (0, max_weight) or (replicas == 1 and max_surge == 0)
    options: list[tuple[int, int]] = []
    if ceil_c < replicas or zero_allowed:
        options.append((ceil_c, replicas))
    if not tied(replicas) and (floor_c != 0 or zero_allowed):
        options.append((floor_c, replicas))
    if max_surge > 0:
        options.append((ceil_c, replicas + 1))
        if not tied(replicas + 1) and (floor_c != 0 or zero_allowed):
            options.append((floor_c, replicas + 1))
    if not options:
        return 0, replicas
    best = options[0]
    for option in options[1:]:  # strictly closer replaces, as in the Go loop
        if abs(option[0] * max_weight / option[1] - weight) < abs(best[0] * max_weight / best[1] - weight):
            best = option
    return best[0], best[1] - best[0]


# (replicas, weight, maxWeight, maxSurge, expected canary, expected stable): the table of argo-rollouts'
# utils/replicaset/canary_test.go TestApproximateWeightedNewStableReplicaCounts, so the port is held to the original.
ARGO_CASES = [
    (0, 0, 100, 0, 0, 0), (0, 50, 100, 0, 0, 0), (0, 100, 100, 0, 0, 0), (0, 0, 100, 1, 0, 0),
    (0, 50, 100, 1, 0, 0), (0, 100, 100, 1, 0, 0), (1, 0, 100, 0, 0, 1), (1, 1, 100, 0, 0, 1),
    (1, 49, 100, 0, 0, 1), (1, 50, 100, 0, 1, 0), (1, 99, 100, 0, 1, 0), (1, 100, 100, 0, 1, 0),
    (1, 0, 100, 1, 0, 1), (1, 1, 100, 1, 1, 1), (1, 49, 100, 1, 1, 1), (1, 50, 100, 1, 1, 1),
    (1, 99, 100, 1, 1, 1), (1, 100, 100, 1, 1, 0), (2, 0, 100, 0, 0, 2), (2, 1, 100, 0, 1, 1),
    (2, 50, 100, 0, 1, 1), (2, 99, 100, 0, 1, 1), (2, 100, 100, 0, 2, 0), (2, 0, 100, 1, 0, 2),
    (2, 1, 100, 1, 1, 2), (2, 50, 100, 1, 1, 1), (2, 99, 100, 1, 2, 1), (2, 100, 100, 1, 2, 0),
    (3, 10, 100, 0, 1, 2), (3, 25, 100, 0, 1, 2), (3, 33, 100, 0, 1, 2), (3, 34, 100, 0, 1, 2),
    (3, 49, 100, 0, 1, 2), (3, 50, 100, 0, 2, 1), (3, 10, 100, 1, 1, 3), (3, 25, 100, 1, 1, 3),
    (3, 33, 100, 1, 1, 2), (3, 34, 100, 1, 1, 2), (3, 49, 100, 1, 2, 2), (3, 50, 100, 1, 2, 2),
    (10, 0, 100, 1, 0, 10), (10, 1, 100, 0, 1, 9), (10, 14, 100, 0, 1, 9), (10, 15, 100, 0, 2, 8),
    (10, 16, 100, 0, 2, 8), (10, 99, 100, 0, 9, 1), (10, 100, 100, 1, 10, 0), (10, 0, 100, 1, 0, 10),
    (10, 1, 100, 1, 1, 10), (10, 18, 100, 1, 2, 9), (10, 19, 100, 1, 2, 9), (10, 20, 100, 1, 2, 8),
    (10, 23, 100, 1, 2, 8), (10, 24, 100, 1, 3, 8), (10, 25, 100, 1, 3, 8), (10, 99, 100, 1, 10, 1),
    (10, 100, 100, 1, 10, 0),
]  # fmt: skip


@pytest.mark.parametrize(("replicas", "weight", "max_weight", "surge", "canary", "stable"), ARGO_CASES)
def test_the_replica_arithmetic_matches_argo_rollouts_own_table(
    replicas: int, weight: int, max_weight: int, surge: int, canary: int, stable: int
) -> None:
    assert basic_canary_counts(replicas, weight, surge, max_weight) == (canary, stable)


def resolve_surge(value: int | str, replicas: int) -> int:
    """maxSurge as Argo resolves it: a percentage of replicas rounded up (replicaset.go resolveFenceposts)."""
    if isinstance(value, str) and value.endswith("%"):
        return math.ceil(replicas * int(value[:-1]) / 100)
    return int(value)


def step_plan(doc: dict[str, Any], replicas: int) -> list[tuple[int, int, int]]:
    """(setWeight, canary pods, all pods) per setWeight step of a Rollout running ``replicas``."""
    canary = doc["spec"]["strategy"]["canary"]
    surge = resolve_surge(canary.get("maxSurge", "25%"), replicas)
    plan = []
    for step in canary["steps"]:
        if "setWeight" in step:
            c, s = basic_canary_counts(replicas, step["setWeight"], surge)
            plan.append((step["setWeight"], c, c + s))
    return plan


def step_collisions(doc: dict[str, Any], sizes: list[int]) -> list[str]:
    """One line per pair of consecutive setWeight steps that would run the same canary pod count at some size."""
    problems = []
    for n in sizes:
        plan = step_plan(doc, n)
        for (w1, c1, _), (w2, c2, _) in itertools.pairwise(plan):
            if c2 <= c1:
                problems.append(f"at {n} replicas setWeight {w1} and {w2} both run {c1} -> {c2} canary pods")
    return problems


def rendered_overlay(overlay: str) -> list[dict[str, Any]]:
    return list(delivery_render.render(ROOT / "manifests" / "overlays" / overlay).docs)


def _one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def sizes_of(docs: list[dict[str, Any]]) -> list[int]:
    """Every replica count the inference Rollout may run at: Git's, and each the HPA may scale it to."""
    hpa = _one(docs, "HorizontalPodAutoscaler", "inference")["spec"]
    git = _one(docs, "Rollout", "inference")["spec"]["replicas"]
    return sorted({git, *range(hpa.get("minReplicas", 1), hpa["maxReplicas"] + 1)})


# The realised canary share per setWeight step at each overlay's Git replica count (canary pods / all pods while
# the step holds; the gateway balances requests per pod, so this is also the canary's share of requests):
#   dev  (4 pods, steps 25/50/75/100): 1/4 = 25 %, 2/4 = 50 %, 3/4 = 75 %, 4/4
#   prod (10 pods, steps 10/25/50/100): 1/10 = 10 %, 3/11 = 27.3 % (one surge pod), 5/10 = 50 %, 10/10
REALISED = {
    "dev": [(25, 1, 4), (50, 2, 4), (75, 3, 4), (100, 4, 4)],
    "prod": [(10, 1, 10), (25, 3, 11), (50, 5, 10), (100, 10, 10)],
}


@pytest.mark.parametrize("overlay", sorted(REALISED))
def test_every_canary_step_runs_more_canary_pods_than_the_last(overlay: str) -> None:
    docs = rendered_overlay(overlay)
    doc = _one(docs, "Rollout", "inference")
    assert "trafficRouting" not in doc["spec"]["strategy"]["canary"], "the arithmetic is the basic canary's"
    assert step_collisions(doc, sizes_of(docs)) == []
    assert step_plan(doc, doc["spec"]["replicas"]) == REALISED[overlay]


def test_twin_colliding_steps_are_named() -> None:
    """Dev's size with the base's 10/25/50 steps (dev before this issue): 10 % and 25 % are both 1 canary pod."""
    docs = rendered_overlay("dev")
    doc = copy.deepcopy(_one(docs, "Rollout", "inference"))
    weights = iter([10, 25, 50, 100])
    for step in doc["spec"]["strategy"]["canary"]["steps"]:
        if "setWeight" in step:
            step["setWeight"] = next(weights)
    collisions = step_collisions(doc, sizes_of(docs))
    assert "at 4 replicas setWeight 10 and 25 both run 1 -> 1 canary pods" in collisions
    # Issue 15's example: at 3 pods (2 + one surge) 10 % and 25 % are both 1 canary pod; 50 % is 2 of 4.
    assert step_collisions(doc, [3]) == ["at 3 replicas setWeight 10 and 25 both run 1 -> 1 canary pods"]


# -- Argo CD and the HPAs ----------------------------------------------------------------------------------------

# Argo CD leaving HPA-owned replicas alone is the manifests check's rule `argocd`
# (forkcast_delivery/checks/argocd.py), run on both overlays with its failing twins in delivery/tests/test_wiring.py.


# -- hashed settings ConfigMaps ----------------------------------------------------------------------------------


def config_map_refs(docs: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Workload kind/name -> the ConfigMap names its pod template reads (the manifests check's own reader of
    references: envFrom, env, volumes, projected volumes, init containers)."""
    ctx = Context(ROOT, ROOT, Render("test", "test", tuple(docs)))
    refs: dict[str, set[str]] = {t.name: set() for t in ctx.templates}
    for r in references(ctx):
        if r.kind == "ConfigMap" and r.holder in refs:
            refs[r.holder].add(r.name)
    return refs


def unhashed_settings(docs: list[dict[str, Any]]) -> list[str]:
    """Settings ConfigMaps rendered without a content hash, and workloads naming a ConfigMap that is not rendered."""
    rendered = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
    problems = [
        f"ConfigMap {name} has no hash suffix: a change to it would not roll the pods"
        for name in sorted(rendered)
        if name in ("forkcast-settings", "forkcast-gateway")
    ]
    for workload, names in sorted(config_map_refs(docs).items()):
        problems += [
            f"{workload} reads ConfigMap {n}, which is not rendered" for n in sorted(names - rendered)
        ]
    return problems


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_settings_config_maps_are_hashed_and_referenced_by_their_hashed_names(overlay: str) -> None:
    docs = rendered_overlay(overlay)
    assert unhashed_settings(docs) == []
    refs = config_map_refs(docs)
    assert any(n.startswith("forkcast-settings-") for n in refs["Rollout/inference"])
    assert any(n.startswith("forkcast-gateway-") for n in refs["Deployment/gateway"])


def test_twin_a_rollout_left_on_the_unhashed_name_is_named() -> None:
    """What kustomize renders without rollouts/kustomize-rollout-config.yaml: the Rollout keeps the bare name."""
    docs = copy.deepcopy(rendered_overlay("prod"))
    doc = _one(docs, "Rollout", "inference")
    for e in doc["spec"]["template"]["spec"]["containers"][0]["envFrom"]:
        if "configMapRef" in e and e["configMapRef"]["name"].startswith("forkcast-settings-"):
            e["configMapRef"]["name"] = "forkcast-settings"
    assert unhashed_settings(docs) == [
        "Rollout/inference reads ConfigMap forkcast-settings, which is not rendered"
    ]


# -- analysis limits, namespaces and windows ---------------------------------------------------------------------


def _seconds(text: str) -> int:
    return int(text[:-1]) * {"s": 1, "m": 60, "h": 3600}[text[-1]]


def canary_seconds(doc: dict[str, Any]) -> int:
    """How long the canary's steps hold at least: every pause plus every analysis step's count x interval."""
    total = 0
    for step in doc["spec"]["strategy"]["canary"]["steps"]:
        if "pause" in step:
            total += _seconds(step["pause"]["duration"])
        if "analysis" in step:
            for ref in step["analysis"]["templates"]:
                for m in templates()[ref["templateName"]]["spec"]["metrics"]:
                    total += m.get("count", 1) * _seconds(m["interval"])
    return total


def analysis_problems(
    doc: dict[str, Any], temps: dict[str, dict[str, Any]], recent_window_s: float
) -> list[str]:
    """Why an analysis would not mean what its comments say (empty: it does)."""
    problems = []
    background = {t["templateName"] for t in doc["spec"]["strategy"]["canary"]["analysis"]["templates"]}
    life = canary_seconds(doc)
    for name, t in sorted(temps.items()):
        for m in t["spec"]["metrics"]:
            where = f"{name}/{m['name']}"
            query = m["provider"]["prometheus"]["query"]
            if "consecutiveErrorLimit" not in m:
                problems.append(f"{where}: consecutiveErrorLimit left to the default (4)")
            # A selector may hold {{args.x}} placeholders, whose braces are not its end.
            selectors = re.findall(r"forkcast_online_auc\w*(\{(?:[^{}]|\{\{[^}]*\}\})*\})?", query)
            if any('namespace="{{args.namespace}}"' not in s for s in selectors):
                problems.append(f"{where}: an online-AUC series is read without the namespace filter")
            if re.search(r"forkcast_online_auc(_samples)?(?!\w)", query):  # the long window's series
                problems.append(
                    f"{where}: compares versions on the hour-long window, not {metric_names.ONLINE_AUC_RECENT}"
                )
            if name in background and "count" not in m:
                ranges = [_seconds(r) for r in re.findall(r"\[(\d+[smh])\]", query)]
                if max(ranges) < life:
                    problems.append(f"{where}: longest range {max(ranges)} s is shorter than the canary's {life} s, "
                                    "so quiet minutes add up to Inconclusive")  # fmt: skip
    steps = doc["spec"]["strategy"]["canary"]["steps"]
    first = next(i for i, s in enumerate(steps) if "analysis" in s)
    waited = sum(_seconds(s["pause"]["duration"]) for s in steps[:first] if "pause" in s)
    if recent_window_s > waited:
        problems.append(f"the recent AUC window ({recent_window_s:g} s) is longer than the canary has served "
                        f"before the online-AUC step ({waited} s)")  # fmt: skip
    return problems


def test_analyses_mean_what_their_comments_say() -> None:
    assert analysis_problems(rollout(), templates(), metric_names.ONLINE_AUC_RECENT_WINDOW_S) == []


def test_twin_analysis_problems_are_named() -> None:
    temps = copy.deepcopy(templates())
    error = temps["inference-error-ratio"]["spec"]["metrics"][0]
    error["provider"]["prometheus"]["query"] = error["provider"]["prometheus"]["query"].split("\nor\n")[0]
    del temps["inference-p95-latency"]["spec"]["metrics"][0]["consecutiveErrorLimit"]
    auc = temps["inference-online-auc"]["spec"]["metrics"][0]["provider"]["prometheus"]
    auc["query"] = auc["query"].replace(
        'forkcast_online_auc_recent_loko_min{namespace="{{args.namespace}}"}', "forkcast_online_auc", 1
    )
    life = canary_seconds(rollout())
    assert analysis_problems(rollout(), temps, 600.0) == [
        f"inference-error-ratio/error-ratio: longest range 120 s is shorter than the canary's {life} s, so quiet "
        "minutes add up to Inconclusive",
        "inference-online-auc/online-auc-vs-stable: an online-AUC series is read without the namespace filter",
        f"inference-online-auc/online-auc-vs-stable: compares versions on the hour-long window, not "
        f"{metric_names.ONLINE_AUC_RECENT}",
        "inference-p95-latency/p95-latency: consecutiveErrorLimit left to the default (4)",
        "the recent AUC window (600 s) is longer than the canary has served before the online-AUC step (300 s)",
    ]


def test_twin_a_condition_reading_past_its_length_guard_is_named() -> None:
    assert length_guard("len(result) > 1 && result[1] < -0.02") == 1
    assert length_guard("len(result) > 0 && result[1] < -0.02") is None  # [x] would be an evaluation Error
    assert length_guard("result[0] >= -0.02") is None


# -- one key may pause the online-AUC analysis, never decide it (issue 18.1) --------------------------------------
#
# The template's query and conditions, run by a real Prometheus (the version `make system-packages` installs) on
# series the online-AUC job's own Window computes, evaluated as Argo evaluates them (the rehearsal's port of
# EvaluateResult and of the condition language, forkcast_local.rehearsal). The clicks are the attacker review's
# proof: ten honest keys whose clicks follow a model's signal, and optionally one key at exactly its 25 % share that
# clicks the lowest-scored half of what it was served (steering a canary down) or exactly its top tenth (up).

HONEST_PAIRS, HONEST_KEYS = 30_000, 10
GOOD, BAD = 0.95, 0.7  # how strongly clicks follow the version's scores (logit shift of a clicked pair)
CANARY_HASH, STABLE_HASH = "c4n", "s7b"


def served_window(rng: np.random.Generator, signal: float, steer: str | None) -> Estimate:
    """The recent-window estimate of one version, with the leave-one-key-out range, as the job exports it."""
    clicked = rng.random(HONEST_PAIRS) < 0.1
    scores = 1 / (1 + np.exp(-(rng.normal(0, 1, HONEST_PAIRS) + clicked * signal)))
    keys = rng.integers(1, HONEST_KEYS + 1, HONEST_PAIRS)
    w = Window(3600.0, 200_000, 0.25)
    w.extend([1000.0] * HONEST_PAIRS, scores.tolist(), clicked.tolist(), keys.tolist())
    if steer is not None:
        n = HONEST_PAIRS // 3  # a quarter of the window: the cap leaves all of it in
        served = 1 / (1 + np.exp(-rng.normal(0, 1, n)))
        cut = np.quantile(served, 0.5 if steer == "down" else 0.9)
        steered = served < cut if steer == "down" else served > cut
        w.extend([1000.0] * n, served.tolist(), steered.tolist(), [0] * n)
    e = w.estimate(1000, 20, since=0.0, key_range=True)
    assert e.excluded == 0 and e.auc is not None and e.loko_min is not None and e.loko_max is not None
    return e


# namespace: (canary signal, the steering key's aim or None, the phase Argo must record)
SCENARIOS = {
    "honest-good": (GOOD, None, "Successful"),
    "honest-bad": (BAD, None, "Failed"),
    "steered-down": (GOOD, "down", "Inconclusive"),
    "steered-up": (BAD, "up", "Inconclusive"),
}


def openmetrics(estimates: dict[str, tuple[Estimate, Estimate]], end: int) -> str:
    """The series the query reads, per scenario namespace, a sample a minute for the 10 minutes up to ``end``."""
    families: dict[str, list[tuple[str, float]]] = {
        "forkcast_online_auc_recent_loko_min": [],
        "forkcast_online_auc_recent_loko_max": [],
        "forkcast_online_auc_recent_samples": [],
        "forkcast_online_auc_recent": [],  # read by the twin only (the query before the range)
        "forkcast_inference_served_info": [],
    }
    for ns, pair in estimates.items():
        for (version, pod_hash), e in zip(
            (("canary", CANARY_HASH), ("stable", STABLE_HASH)), pair, strict=True
        ):
            labels = f'namespace="{ns}",model_version="{version}"'
            families["forkcast_online_auc_recent_loko_min"].append((labels, e.loko_min or 0.0))
            families["forkcast_online_auc_recent_loko_max"].append((labels, e.loko_max or 0.0))
            families["forkcast_online_auc_recent_samples"].append((labels, float(e.samples)))
            families["forkcast_online_auc_recent"].append((labels, e.auc or 0.0))
            families["forkcast_inference_served_info"].append(
                (f'{labels},rollouts_pod_template_hash="{pod_hash}"', 1.0)
            )
    lines = []
    for name, samples in families.items():
        kind = "info" if name.endswith("_info") else "gauge"
        lines.append(f"# TYPE {name.removesuffix('_info') if kind == 'info' else name} {kind}")
        lines += [
            f"{name}{{{labels}}} {value!r} {ts}"
            for labels, value in samples
            for ts in range(end - 600, end + 1, 60)
        ]
    return "\n".join([*lines, "# EOF", ""])


def test_one_key_can_pause_the_online_auc_analysis_but_never_decide_it(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: run `make system-packages` (Debian package `prometheus`)")
    rng = np.random.default_rng(0)
    estimates = {
        ns: (served_window(rng, signal, steer), served_window(rng, GOOD, None))
        for ns, (signal, steer, _) in SCENARIOS.items()
    }
    # What the attack does to the plain AUC difference (the query before issue 18.1's range): it decides.
    plain = {ns: c.auc - s.auc for ns, (c, s) in estimates.items() if c.auc is not None and s.auc is not None}
    assert plain["steered-down"] < -0.02 <= plain["honest-good"]
    assert plain["honest-bad"] < -0.02 <= plain["steered-up"]

    end = int(time.time()) // 60 * 60 - 60
    (tmp_path / "series.om").write_text(openmetrics(estimates, end))
    tsdb = tmp_path / "prometheus" / "tsdb"
    backfill = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(tmp_path / "series.om"), str(tsdb)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert backfill.returncode == 0, backfill.stdout + backfill.stderr
    (tmp_path / "prometheus.yml").write_text("# No scrapes: the series are backfilled.\nglobal: {}\n")
    doc = templates()["inference-online-auc"]
    template = spec_mod._template(doc)  # the rehearsal's reader: conditions in its (Argo's expr) subset
    (metric,) = template.metrics
    with Prometheus(tmp_path / "prometheus", config=tmp_path / "prometheus.yml") as server:

        def measure(ns: str, **extra: str) -> tuple[str, list[float]]:
            args = {"namespace": ns, "canary-hash": CANARY_HASH, "stable-hash": STABLE_HASH, **extra}
            query = spec_mod.render_query(metric, template, args)
            return query, instant(server.url, query, end)

        phases = {}
        for ns, (_, _, want) in SCENARIOS.items():
            query, result = measure(ns)
            c, s = estimates[ns]
            assert c.loko_min is not None and c.loko_max is not None
            assert s.loko_min is not None and s.loko_max is not None
            # [worst, best] in that order, as Argo's provider hands the vector to the conditions.
            assert result == pytest.approx([c.loko_min - s.loko_max, c.loko_max - s.loko_min], abs=1e-12), ns
            phases[ns] = (evaluate(metric, result)[0], want)
            # sort() orders them, not the order they are written in: swapped operands of `or` give the same
            # answer, and without sort() the swapped query answers [best, worst] (best passes a bad canary).
            swapped = swap_bounds(query)
            assert instant(server.url, swapped, end) == result
            assert instant(server.url, swapped.replace("sort(", "(", 1), end) == result[::-1]
        # Too few samples for either version: the guard leaves nothing, so neither condition holds.
        _, starved = measure("honest-good", **{"min-samples": "1000000"})
        # Twin: the template before the range (one value, canary AUC minus stable AUC) on the same series is
        # decided by the steering key: it aborts the good canary and passes the bad one.
        before = {}
        for ns in SCENARIOS:
            args = {
                "namespace": ns,
                "canary-hash": CANARY_HASH,
                "stable-hash": STABLE_HASH,
                "min-samples": "2000",
            }
            value = instant(server.url, _substituted_args(PLAIN_DIFFERENCE_QUERY, args), end)
            before[ns] = evaluate(plain_difference(metric), value)[0]
    assert {ns: got for ns, (got, _) in phases.items()} == {ns: want for ns, (_, want) in phases.items()}
    assert starved == [] and evaluate(metric, starved)[0] == "Inconclusive"
    assert before == {
        "honest-good": "Successful",
        "honest-bad": "Failed",
        "steered-down": "Failed",
        "steered-up": "Successful",
    }


# The online-AUC query and conditions before issue 18.1's range (rollouts/analysis-templates.yaml at 7393fd7).
PLAIN_DIFFERENCE_QUERY = """
(
  max(forkcast_online_auc_recent{namespace="{{args.namespace}}"} * on(model_version) group_left() max by (model_version) (forkcast_inference_served_info{namespace="{{args.namespace}}",rollouts_pod_template_hash="{{args.canary-hash}}"}))
  -
  max(forkcast_online_auc_recent{namespace="{{args.namespace}}"} * on(model_version) group_left() max by (model_version) (forkcast_inference_served_info{namespace="{{args.namespace}}",rollouts_pod_template_hash="{{args.stable-hash}}"}))
)
and on()
min(forkcast_online_auc_recent_samples{namespace="{{args.namespace}}"} * on(model_version) group_left() max by (model_version) (forkcast_inference_served_info{namespace="{{args.namespace}}",rollouts_pod_template_hash=~"{{args.canary-hash}}|{{args.stable-hash}}"})) >= {{args.min-samples}}
"""  # noqa: E501


def plain_difference(metric: spec_mod.Metric) -> spec_mod.Metric:
    """The metric with the single-value conditions of before."""
    return dataclasses.replace(
        metric,
        success=parse_condition("len(result) > 0 && result[0] >= -0.02"),
        failure=parse_condition("len(result) > 0 && result[0] < -0.02"),
    )


def _substituted_args(query: str, args: dict[str, str]) -> str:
    return re.sub(r"\{\{args\.([\w-]+)\}\}", lambda m: args[m.group(1)], query)


def instant(url: str, query: str, at: int) -> list[float]:
    """An instant query's values in the order Prometheus' API returns them (Argo's provider keeps that order)."""
    with urllib.request.urlopen(
        f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": query, "time": at}), timeout=10
    ) as resp:
        body = json.load(resp)
    assert body["status"] == "success" and body["data"]["resultType"] == "vector", body
    return [float(s["value"][1]) for s in body["data"]["result"]]


def swap_bounds(query: str) -> str:
    """The query with the two label_replace operands of its `or` written the other way round."""
    m = re.search(r"(\s*label_replace\(.*?\n\s*\))\n(\s*or)\n(\s*label_replace\(.*?\n\s*\))\n", query, re.S)
    assert m is not None, query
    return query[: m.start()] + f"{m[3]}\n{m[2]}\n{m[1]}\n" + query[m.end() :]
