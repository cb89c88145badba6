"""The rehearsal engine against Argo Rollouts' own rules, on a fake clock and the rendered dev overlay (no processes).

Each test names the Argo rule it holds the engine to; the replica table is Argo's own test table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
from forkcast_delivery.render import render

from forkcast_local.rehearsal import spec as spec_mod
from forkcast_local.rehearsal.analysis import AnalysisRun
from forkcast_local.rehearsal.conditions import ConditionError, EvaluationError, parse
from forkcast_local.rehearsal.controller import CanaryController, Status
from forkcast_local.rehearsal.replicas import ReplicaSet, basic_canary_counts
from forkcast_local.rehearsal.spec import Metric, RolloutSpec, SpecError, Template

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return list(render(ROOT / "manifests" / "overlays" / "dev").docs)


@pytest.fixture(scope="module")
def dev(docs: list[dict[str, Any]]) -> RolloutSpec:
    return spec_mod.load(docs)


# -- conditions ----------------------------------------------------------------------------------------------------


def test_conditions_short_circuit_and_index_errors_like_expr() -> None:
    guarded = parse("len(result) > 0 && result[0] <= 0.01")
    assert guarded([0.005]) and not guarded([0.02]) and not guarded([])  # [] never reaches result[0]
    with pytest.raises(EvaluationError, match="index out of range: 0"):
        parse("result[0] <= 0.01")([])
    assert parse("len(result) == 0 || isNaN(result[0])")([float("nan")])


@pytest.mark.parametrize(
    ("expr", "why"),
    [
        ("result[0] <= 0.01 && __import__('os')", "outside the supported subset"),
        ("len(result) > 0 && result[0] < 1 || len(result) == 0", "mixes && and ||"),
        ("(result[0] < 1)", "outside the supported subset"),
    ],
)
def test_conditions_outside_the_subset_are_refused(expr: str, why: str) -> None:
    with pytest.raises(ConditionError, match=why):
        parse(expr)


# -- the rendered spec -----------------------------------------------------------------------------------------


def test_reads_the_rendered_dev_rollout(dev: RolloutSpec) -> None:
    assert dev.namespace == "forkcast-dev" and dev.replicas == 4
    assert [(s.kind, s.weight) for s in dev.steps if s.kind == "setWeight"] == [
        ("setWeight", 25),
        ("setWeight", 50),
        ("setWeight", 75),
        ("setWeight", 100),
    ]
    assert dev.background is not None
    assert dev.background.templates == ("inference-error-ratio", "inference-p95-latency")
    assert dev.background_starting_step == 1
    assert (dev.progress_deadline_s, dev.progress_deadline_abort) == (600.0, True)
    auc = dev.templates["inference-online-auc"].metrics[0]
    assert (auc.interval_s, auc.count, auc.failure_limit, auc.inconclusive_limit) == (120.0, 5, 1, 3)
    assert auc.consecutive_error_limit == 2


def _edit(
    docs: list[dict[str, Any]], kind: str, name: str, change: Callable[[dict[str, Any]], None]
) -> list[Any]:
    import copy

    out = copy.deepcopy(docs)
    (doc,) = [d for d in out if d["kind"] == kind and d["metadata"]["name"] == name]
    change(doc)
    return out


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return change


@pytest.mark.parametrize(
    ("kind", "name", "path", "value", "why"),
    [
        (
            "Rollout",
            "inference",
            ["spec", "strategy", "canary", "trafficRouting"],
            {"nginx": {}},
            "traffic-routed",
        ),
        ("Rollout", "inference", ["spec", "strategy", "canary", "steps", 1], {"experiment": {}}, "step 1"),
        (
            "AnalysisTemplate",
            "inference-online-auc",
            ["spec", "metrics", 0, "successCondition"],
            "result[0] >= -0.02 and true",
            "inference-online-auc metric online-auc-vs-stable successCondition",
        ),
        (
            "AnalysisTemplate",
            "inference-online-auc",
            ["spec", "metrics", 0, "provider", "prometheus", "query"],
            "up{job='{{ args.namespace }}'}",
            "placeholder",
        ),
        (
            "AnalysisTemplate",
            "inference-p95-latency",
            ["spec", "metrics", 0, "interval"],
            "60",
            "not a Go duration",
        ),
        (
            "Rollout",
            "inference",
            ["spec", "strategy", "canary", "steps", 2, "analysis", "args"],
            [],
            "needs args",
        ),
    ],
)
def test_what_the_rehearsal_cannot_reproduce_is_refused_by_name(
    docs: list[dict[str, Any]], kind: str, name: str, path: list[Any], value: Any, why: str
) -> None:
    with pytest.raises(SpecError, match=why):
        spec_mod.load(_edit(docs, kind, name, _set(path, value)))


# -- replica arithmetic --------------------------------------------------------------------------------------------

# (name, (spec.replicas, setWeight, maxSurge, maxUnavailable, stable spec, stable available, canary spec, canary
# available, expected canary, expected stable)): every basic-canary case of argo-rollouts
# utils/replicaset/canary_test.go TestCalculateReplicaCountsForCanary (without traffic routing, setCanaryScale,
# older ReplicaSets, promoteFull or abort flags), so the port is held to the original function.
ARGO_BASIC_CANARY = [
    ("Do not add extra RSs in scaleDownCount when .Spec.Replica < AvailableReplicas",
     (10, 100, 3, 0, 7, 8, 6, 3, 6, 7)),
    ("Use max surge int to scale up canary",
     (10, 20, 2, 0, 10, 10, 0, 0, 2, 10)),
    ("Use max surge percentage to scale up canary",
     (10, 20, "20%", 0, 10, 10, 0, 0, 2, 10)),
    ("Scale down extra stable replicas",
     (10, 20, "20%", 0, 10, 10, 2, 2, 2, 8)),
    ("Do not go past max surge",
     (10, 30, 2, 0, 10, 10, 0, 0, 2, 10)),
    ("Use max unavailable int to scale down stableRS",
     (10, 20, 0, 2, 10, 10, 0, 0, 0, 8)),
    ("Use max surge percentage to scale down stableRS",
     (10, 20, 0, "20%", 10, 10, 0, 0, 0, 8)),
    ("Do not go past max unavailable",
     (10, 30, 0, 2, 10, 10, 0, 0, 0, 8)),
    ("Use Max Surge and Max Unavailable",
     (10, 50, 2, 1, 10, 10, 0, 0, 2, 9)),
    ("Scale canaryRS to zero on setWeight of 0%",
     (10, 0, 1, 1, 10, 10, 1, 1, 0, 10)),
    ("Scale stable to zero on setWeight of 100%",
     (10, 100, 1, 1, 1, 1, 10, 10, 10, 0)),
    ("Do not scale canaryRS down to zero on non-zero weight",
     (1, 20, 1, 0, 1, 1, 0, 0, 1, 1)),
    ("Do not scale canaryRS down to zero on non-100 weight",
     (1, 90, 1, 0, 1, 1, 0, 0, 1, 1)),
    ("Scale canaryRS to zero on <50 weight without surge",
     (1, 49, 0, 1, 1, 1, 0, 0, 0, 1)),
    ("Scale stableRS down to zero on >=50 weight without surge",
     (1, 51, 0, 1, 1, 1, 0, 0, 0, 0)),
    ("Scale canaryRS to one on >=50 weight without surge and stable replicas",
     (1, 51, 0, 1, 0, 0, 0, 0, 1, 0)),
    ("Scale down canaryRS and stable",
     (10, 30, 0, 3, 8, 5, 4, 4, 3, 7)),
    ("Scale down stable and canary available",
     (10, 100, 1, 0, 10, 2, 10, 8, 9, 2)),
    ("Do not round past maxSurge with uneven setWeight divisor",
     (10, 5, 0, 1, 10, 10, 0, 0, 0, 9)),
    ("Do not round past maxSurge with uneven setWeight divisor (part 2)",
     (10, 5, 0, 1, 9, 9, 0, 0, 1, 9)),
    ("Use maxUnavailable of 1 when percentage of maxUnavailable and maxSurge result in 0 replicas",
     (10, 10, "0%", "0%", 10, 10, 0, 0, 0, 9)),
    ("honor maxSurge during scale up when stableRS unavailable",
     (4, 100, 1, 0, 4, 1, 0, 0, 1, 4)),
    ("scale down to maxunavailable without exceeding maxSurge",
     (3, 99, 0, 2, 3, 3, 0, 0, 0, 1)),
    ("scale down to maxunavailable without exceeding maxSurge (part 2)",
     (3, 99, 0, 2, 1, 1, 0, 0, 2, 1)),
    ("honor maxUnavailable when aborting or reducing weight part 1",
     (4, 0, 1, 0, 0, 0, 4, 4, 4, 1)),
    ("honor maxUnavailable when aborting or reducing weight part 2",
     (4, 0, 1, 0, 1, 0, 4, 4, 4, 1)),
    ("honor maxUnavailable when aborting or reducing weight part 3",
     (4, 0, 1, 0, 1, 1, 4, 4, 3, 1)),
]  # fmt: skip


@pytest.mark.parametrize(("name", "case"), ARGO_BASIC_CANARY, ids=[c[0] for c in ARGO_BASIC_CANARY])
def test_basic_canary_counts_match_argo_rollouts_own_table(
    dev: RolloutSpec, name: str, case: tuple[Any, ...]
) -> None:
    replicas, weight, surge, unavailable, s_spec, s_avail, c_spec, c_avail, want_c, want_s = case
    spec = dataclasses.replace(dev, replicas=replicas, max_surge=surge, max_unavailable=unavailable)
    got = basic_canary_counts(spec, weight, ReplicaSet(c_spec, c_avail), ReplicaSet(s_spec, s_avail))
    assert got == (want_c, want_s), name


# -- analysis runs -------------------------------------------------------------------------------------------------


def _metric(**overrides: Any) -> Metric:
    base: dict[str, Any] = {
        "template": "t",
        "name": "m",
        "query": 'q{ns="{{args.namespace}}"}',
        "success": parse("len(result) > 0 && result[0] <= 1"),
        "failure": parse("len(result) > 0 && result[0] > 1"),
        "interval_s": 60.0,
        "initial_delay_s": 0.0,
        "count": None,
        "failure_limit": 0,
        "inconclusive_limit": 0,
        "consecutive_error_limit": 4,
    }
    return Metric(**(base | overrides))


def _run(*metrics: Metric) -> AnalysisRun:
    return AnalysisRun("run", [Template("t", {"namespace": None}, metrics)], {"namespace": "ns"}, 0.0)


class Script:
    """A measurement per call from a script of outcomes: S(uccess) F(ail) I(nconclusive) E(rror)."""

    VALUES: ClassVar[dict[str, list[float]]] = {"S": [0.5], "F": [2.0], "I": []}

    def __init__(self, outcomes: str) -> None:
        self.outcomes = iter(outcomes)
        self.queries: list[str] = []

    def __call__(self, metric: Metric, query: str) -> list[float]:
        self.queries.append(query)
        outcome = next(self.outcomes)
        if outcome == "E":
            raise ConnectionError("prometheus unreachable")
        return self.VALUES[outcome]


def _drive(run: AnalysisRun, script: Script, until: float = 10_000.0, step: float = 1.0) -> list[str]:
    phases, now = [], 0.0
    while now <= until and run.phase == "Running":
        run.reconcile(now, script)
        phases.append(run.phase)
        now += step
    return phases


def test_failure_limit_counts_failures_in_total_not_in_a_row() -> None:
    run = _run(_metric(failure_limit=1))
    _drive(run, Script("FSSF"))
    assert run.phase == "Failed" and [m.phase for m in run.results[0].measurements] == list(
        ["Failed", "Successful", "Successful", "Failed"]
    )
    assert run.message == 'Metric "m" assessed Failed due to failed (2) > failureLimit (1)'


def test_inconclusive_limit_counts_in_total_and_the_run_is_inconclusive() -> None:
    run = _run(_metric(inconclusive_limit=2))
    _drive(run, Script("ISISI"))
    assert run.phase == "Inconclusive" and run.results[0].count == 5
    assert run.message.endswith("inconclusive (3) > inconclusiveLimit (2)")


def test_consecutive_errors_are_reset_by_a_success_and_errors_are_not_counted() -> None:
    run = _run(_metric(consecutive_error_limit=2))
    _drive(run, Script("EESEEE"))
    r = run.results[0]
    assert run.phase == "Error" and (r.error, r.consecutive_error, r.count) == (5, 3, 1)
    assert run.message.startswith(
        'Metric "m" assessed Error due to consecutiveErrors (3) > consecutiveErrorLimit (2)'
    )
    assert "ConnectionError: prometheus unreachable" in run.message


def test_a_condition_that_errors_on_the_result_is_an_error_measurement() -> None:
    run = _run(_metric(success=parse("result[0] <= 1"), consecutive_error_limit=0))
    _drive(run, Script("I"))
    assert run.phase == "Error" and "index out of range" in run.results[0].measurements[0].message


def test_count_ends_the_metric_successful_with_failures_within_the_limit() -> None:
    run = _run(_metric(count=3, failure_limit=1, interval_s=120.0))
    script = Script("SFS")
    _drive(run, script)
    assert run.phase == "Successful" and run.results[0].count == 3 and len(script.queries) == 3
    assert script.queries[0] == 'q{ns="ns"}'


def test_interval_initial_delay_and_the_error_retry_schedule_measurements() -> None:
    run = AnalysisRun("run", [Template("t", {"namespace": None}, (_metric(initial_delay_s=30.0, count=2),))],
                      {"namespace": "ns"}, 0.0, time_scale=10.0)  # fmt: skip
    script = Script("ESS")
    times = []
    for now in [x / 10 for x in range(0, 200)]:
        before = len(script.queries)
        run.reconcile(now, script)
        if len(script.queries) > before:
            times.append(now)
    # initialDelay 30 s / 10 = 3.0; after the Error the retry is 10 s / 10 = 1 s later (strictly after); then the
    # metric's interval, 60 s / 10 = 6 s after the last; the Error is not in Count, so count 2 needs two more.
    assert times == [3.0, 4.1, 10.2] and run.phase == "Successful"


def test_one_failed_metric_ends_the_run_while_an_indefinite_one_is_still_measuring() -> None:
    slow = _metric(name="slow", failure_limit=0)
    forever = _metric(name="forever", interval_s=1.0)
    run = _run(slow, forever)

    def measure(metric: Metric, query: str) -> list[float]:
        return [2.0] if metric.name == "slow" else [0.5]

    run.reconcile(0.0, measure)
    deciding = run.deciding()
    assert run.phase == "Failed" and deciding is not None and deciding.metric.name == "slow"
    assert [r.phase for r in run.results] == ["Failed", "Successful"]  # IsTerminating: the other one ends


# -- the Rollout ---------------------------------------------------------------------------------------------------

GOOD = {"error-ratio": [0.0], "p95-latency": [0.01], "online-auc-vs-stable": [0.0, 0.0]}


def _rollout(
    spec: RolloutSpec,
    values: dict[str, list[float]],
    *,
    canary_ready: bool = True,
    until: float = 4000.0,
    scale: float = 1.0,
) -> tuple[CanaryController, list[Status]]:
    """Reconcile every second; pods become available one pass after they are asked for (or never)."""
    ctl = CanaryController(spec, canary_hash="c4n", stable_hash="s7b", started_at=0.0, time_scale=scale)
    queries: list[str] = []

    def measure(metric: Metric, query: str) -> list[float]:
        queries.append(query)
        return values[metric.name]

    statuses, canary_avail, stable_avail, now, settle = [], 0, spec.replicas, 0.0, 3
    while now <= until and settle > 0:
        status = ctl.reconcile(now, canary_avail, stable_avail, measure)
        statuses.append(status)
        # Stop a few passes after an end (an abort scales the canary down over passes, as maxUnavailable allows),
        # or at a pause that waits for a person.
        if status.phase in ("Healthy", "Degraded") or (status.phase, status.message) == (
            "Paused",
            "InconclusiveAnalysis",
        ):
            settle -= 1
        canary_avail = status.canary_replicas if canary_ready else 0
        stable_avail = status.stable_replicas
        now += 1.0
    assert all("{{" not in q and "c4n" in q for q in queries)
    return ctl, statuses


def test_a_good_canary_walks_the_dev_steps_with_argo_pod_counts_and_is_promoted(dev: RolloutSpec) -> None:
    ctl, statuses = _rollout(dev, GOOD)
    assert statuses[-1].phase == "Healthy" and ctl.promoted
    seen: list[tuple[int, int, int]] = []
    for s in statuses:
        pair = (s.weight, s.canary_replicas, s.stable_replicas)
        if not seen or seen[-1] != pair:
            seen.append(pair)
    # Dev: 4 pods, maxSurge 25 % (1 pod), maxUnavailable 0: one surge canary pod, then the stable scaled down.
    assert seen[0] == (25, 1, 4) and (25, 1, 3) in seen and (50, 2, 2) in seen and (75, 3, 1) in seen
    assert seen[-1] == (100, 4, 0)
    assert all(s.canary_replicas + s.stable_replicas <= dev.replicas + 1 for s in statuses)
    # startingStep 1: the background run is created once setWeight 25 has completed, never before.
    assert any("AnalysisRun background created" in e for e in ctl.events)
    assert ctl.background is not None and ctl.background.phase == "Successful"  # terminated on promotion


def test_a_failing_background_metric_aborts_and_scales_the_canary_to_zero(dev: RolloutSpec) -> None:
    _ctl, statuses = _rollout(dev, GOOD | {"p95-latency": [0.2]})
    last = statuses[-1]
    assert last.phase == "Degraded" and (last.weight, last.canary_replicas, last.stable_replicas) == (0, 0, 4)
    assert last.message == (
        'RolloutAborted: Background analysis phase error/failed: Metric "p95-latency" assessed Failed due to '
        "failed (2) > failureLimit (1)"
    )
    assert last.verdict is not None
    assert (last.verdict.decided_by, last.verdict.template, last.verdict.metric) == (
        "background", "inference-p95-latency", "p95-latency",
    )  # fmt: skip


def test_a_failing_online_auc_step_aborts_while_latency_passes(dev: RolloutSpec) -> None:
    ctl, statuses = _rollout(dev, GOOD | {"online-auc-vs-stable": [-0.1, -0.1]})
    verdict = statuses[-1].verdict
    assert statuses[-1].phase == "Degraded" and verdict is not None
    assert (verdict.decided_by, verdict.template, verdict.phase) == (
        "step 2",
        "inference-online-auc",
        "Failed",
    )
    assert statuses[-1].message.startswith("RolloutAborted: Step-based analysis phase error/failed")
    assert ctl.background is not None and all(r.failed == 0 for r in ctl.background.results)


def test_an_inconclusive_step_pauses_the_rollout_and_does_not_abort(dev: RolloutSpec) -> None:
    ctl, statuses = _rollout(dev, GOOD | {"online-auc-vs-stable": []})
    last = statuses[-1]
    assert (last.phase, last.message) == ("Paused", "InconclusiveAnalysis")
    assert ctl.abort_message is None and last.canary_replicas == 1 and last.weight == 25
    assert last.verdict is not None and last.verdict.message.endswith(
        "inconclusive (4) > inconclusiveLimit (3)"
    )


def test_a_canary_never_ready_is_aborted_by_the_progress_deadline(dev: RolloutSpec) -> None:
    _ctl, statuses = _rollout(dev, GOOD, canary_ready=False, scale=10.0)
    last = statuses[-1]
    assert last.phase == "Degraded" and last.canary_replicas == 0 and last.stable_replicas == 4
    assert last.message == 'RolloutAborted: ReplicaSet "inference-c4n" has timed out progressing.'
    assert last.verdict is not None and last.verdict.decided_by == "progressDeadline"
    first = next(i for i, s in enumerate(statuses) if s.phase == "Degraded")
    assert 60 < first <= 62  # reconciled every second: 600 s / 10 without progress


def test_twin_without_progress_deadline_abort_the_rollout_is_only_degraded(dev: RolloutSpec) -> None:
    spec = dataclasses.replace(dev, progress_deadline_abort=False)
    ctl, statuses = _rollout(spec, GOOD, canary_ready=False, scale=10.0)
    last = statuses[-1]
    assert last.phase == "Degraded" and last.message.startswith("ProgressDeadlineExceeded: ")
    assert ctl.abort_message is None and last.canary_replicas == 1  # not scaled down: nobody aborted it


def test_a_pause_longer_than_the_deadline_does_not_count_against_it(dev: RolloutSpec) -> None:
    steps = tuple(dataclasses.replace(s, pause_s=3600.0) if s.kind == "pause" else s for s in dev.steps)
    _ctl, statuses = _rollout(dataclasses.replace(dev, steps=steps), GOOD, until=20_000.0)
    assert statuses[-1].phase == "Healthy" and statuses[-1].verdict is None
