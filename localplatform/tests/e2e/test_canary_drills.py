"""The four canary drills on real processes (tiny data, models trained once per session, time x30), each asserting
its reason: which phase, which template and metric, or the progress deadline, and what the rollback did.

Also, without processes: the DNS stand-in for the headless Service answers the ready pods and nothing else.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import dns.message
import dns.rcode
import dns.rdatatype

from forkcast_local.drills import canary_good, canary_low_traffic, canary_never_ready, canary_worse_model
from forkcast_local.rehearsal import scenario as s
from forkcast_local.rehearsal.controller import PAUSE_INCONCLUSIVE, TIMED_OUT, Status, Verdict
from forkcast_local.rehearsal.dns import ServiceDns
from forkcast_local.rehearsal.runner import Outcome

TIME_SCALE = 30.0


def test_the_service_dns_answers_the_ready_pods_only() -> None:
    server = ServiceDns("inference-pods").start()
    try:
        server.set_addresses(["127.9.9.3", "127.9.9.2"])
        answer = dns.message.from_wire(
            server.answer(dns.message.make_query("inference-pods.", "A").to_wire())
        )
        assert sorted(rr.address for rr in answer.answer[0]) == ["127.9.9.2", "127.9.9.3"]
        server.set_addresses([])
        empty = dns.message.from_wire(server.answer(dns.message.make_query("inference-pods.", "A").to_wire()))
        assert empty.rcode() == dns.rcode.NOERROR and not empty.answer  # a headless Service with no ready pod
        other = dns.message.from_wire(server.answer(dns.message.make_query("gateway.", "A").to_wire()))
        assert other.rcode() == dns.rcode.NXDOMAIN
    finally:
        server.stop()


def _ended(
    phase: str, verdict: Verdict | None, *, failed: int = 0, weight: int = 100, after: str = "v2"
) -> s.Result:
    """A result as ``run_scenario`` returns it (stable v1, canary v2; ``after`` served once the update ended), for
    the drills' checks without processes."""
    status = Status(phase, "", 8, weight, 2, 0, verdict)
    return s.Result(Outcome(status, Counter(v1=6, v2=3), Counter({after: 3}), failed, 9, 1.0), "v1", "v2")


def test_every_canary_drill_refuses_failed_client_requests() -> None:
    """The shared check (``scenario.client_failures``): a promoted canary with failed requests is not OK."""
    assert canary_good.check(_ended("Healthy", None)) == []
    assert canary_good.check(_ended("Healthy", None, failed=2)) == ["2 client requests failed"]


def test_the_abort_drills_refuse_an_update_that_was_not_aborted() -> None:
    """The shared check (``scenario.aborted``): a Healthy end is reported as such, before any other problem."""
    for drill in (canary_worse_model, canary_never_ready):
        assert drill.check(_ended("Healthy", None, failed=1)) == ["expected an abort, got Healthy ()"]
        paused = Verdict("step 2", "Inconclusive", "past inconclusiveLimit (3)", "inference-online-auc")
        assert drill.check(_ended("Paused", paused)) == ["expected an abort, got Paused ()"]
    wrong = Verdict("background", "Failed", "error ratio", "inference-error-ratio", "error-ratio")
    assert canary_worse_model.check(_ended("Degraded", wrong, weight=0, after="v1")) == [
        f"expected the inference-online-auc step analysis to fail, got {wrong}"
    ]


# ``cache`` (conftest.py): the tiny dataset and trained models, shared with the other drills of the session.
def _run(scenario: s.Scenario, cache: Path, work: Path) -> s.Result:
    return s.run_scenario(scenario, work, cache=cache, time_scale=TIME_SCALE, timeout_s=200)


def _aborted(scenario: s.Scenario, cache: Path, work: Path) -> tuple[s.Result, Outcome, Verdict]:
    """Run a canary the Rollout must abort: the outcome is Degraded with a verdict (else the report explains)."""
    result = _run(scenario, cache, work)
    o, v = result.outcome, result.outcome.verdict
    assert o.status.phase == "Degraded" and v is not None, s.report(result)
    return result, o, v


def test_good_canary_is_promoted_to_100_percent(cache: Path, tmp_path: Path) -> None:
    result = _run(canary_good.SCENARIO, cache, tmp_path)
    o = result.outcome
    assert (o.status.phase, o.status.weight, o.status.step_index) == ("Healthy", 100, 8), s.report(result)
    assert o.verdict is None and o.failed == 0
    assert set(o.served) == {result.stable_version, result.canary_version}  # both served during the update
    assert set(o.served_after_end) == {result.canary_version}
    assert canary_good.check(result) == []


def test_worse_model_is_aborted_by_the_online_auc_step_while_latency_passes(
    cache: Path, tmp_path: Path
) -> None:
    result, o, v = _aborted(canary_worse_model.SCENARIO, cache, tmp_path)
    assert (v.decided_by, v.template, v.metric, v.phase) == (
        "step 2",
        "inference-online-auc",
        "online-auc-vs-stable",
        "Failed",
    )
    assert "failureLimit (1)" in v.message
    assert o.status.message.startswith("RolloutAborted: Step-based analysis phase error/failed")
    assert (o.status.weight, o.status.canary_replicas) == (0, 0)
    assert set(o.served_after_end) == {result.stable_version} and o.failed == 0
    assert canary_worse_model.check(result) == []


def test_never_ready_canary_is_aborted_by_the_progress_deadline_and_reverted(
    cache: Path, tmp_path: Path
) -> None:
    result, o, v = _aborted(canary_never_ready.SCENARIO, cache, tmp_path)
    assert (v.decided_by, v.phase, v.template) == ("progressDeadline", TIMED_OUT, None)
    assert "has timed out progressing" in v.message and o.status.step_index == 0
    assert result.canary_version not in o.served and o.failed == 0
    assert result.rollback is not None and result.rollback.returncode in canary_never_ready.ROLLBACK_OK
    assert result.release_after_rollback == result.stable_version
    assert canary_never_ready.check(result) == []


def test_low_traffic_canary_pauses_inconclusive_and_is_not_aborted(cache: Path, tmp_path: Path) -> None:
    result = _run(canary_low_traffic.SCENARIO, cache, tmp_path)
    o, v = result.outcome, result.outcome.verdict
    assert (o.status.phase, o.status.message) == ("Paused", PAUSE_INCONCLUSIVE), s.report(result)
    assert v is not None and (v.decided_by, v.template, v.phase) == (
        "step 2",
        "inference-online-auc",
        "Inconclusive",
    )
    assert "inconclusiveLimit (3)" in v.message
    assert o.status.canary_replicas > 0 and o.failed == 0
    assert canary_low_traffic.check(result) == []
