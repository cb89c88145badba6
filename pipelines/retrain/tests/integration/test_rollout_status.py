"""wait-rollout: the decision over a live Rollout, and the poll against a local HTTP server standing in for Argo CD.

The server answers the two Argo CD API calls the job makes with a scripted sequence of live Rollouts and records
every request (path, query, Authorization header), so the tests see what the job asked and what it concluded.
"""

from __future__ import annotations

import copy
import json
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from forkcast_retrain.cli import main
from forkcast_retrain.rollout_status import (
    ArgoCD,
    Expected,
    aborted,
    decide,
    decide_deployment,
    wait_for_rollout,
)

VERSION = "20260101T000000Z-0000abcd"
IMAGE = "reg.example/inference@sha256:" + "ab" * 32


def rollout(**status: Any) -> dict[str, Any]:
    """A live canary Rollout at 100 % with VERSION and IMAGE; ``status`` overrides fields of its status."""
    ro: dict[str, Any] = {
        "metadata": {"name": "inference", "namespace": "forkcast-dev", "generation": 7},
        "spec": {
            "replicas": 3,
            "strategy": {"canary": {}},
            "template": {
                "metadata": {"annotations": {"forkcast.io/model-version": VERSION}},
                "spec": {"containers": [{"name": "inference", "image": IMAGE}]},
            },
        },
        "status": {
            "observedGeneration": "7",
            "replicas": 3,
            "updatedReplicas": 3,
            "availableReplicas": 3,
            "currentPodHash": "abc",
            "stableRS": "abc",
        },
    }
    ro["status"].update(status)
    return ro


def test_a_fully_promoted_rollout_with_the_release_is_done() -> None:
    assert decide(rollout(), Expected(VERSION)).outcome == "done"
    assert decide(rollout(), Expected(None, IMAGE)).outcome == "done"


@pytest.mark.parametrize(
    ("ro", "expected", "outcome", "reason"),
    [
        (rollout(stableRS="old"), Expected(VERSION), "wait", "waiting for all steps to complete"),
        (
            rollout(pauseConditions=[{"reason": "CanaryPauseStep"}]),
            Expected(VERSION),
            "wait",
            "CanaryPauseStep",
        ),
        (rollout(observedGeneration="6"), Expected(VERSION), "wait", "spec update to be observed"),
        (rollout(availableReplicas=2), Expected(VERSION), "wait", "still becoming available"),
        (rollout(), Expected("20260202T000000Z-00000000"), "wait", f"has model {VERSION}"),
        (rollout(), Expected(None, "reg.example/inference@sha256:" + "cd" * 32), "wait", f"runs {IMAGE}"),
        (
            rollout(
                conditions=[{"type": "Progressing", "reason": "RolloutAborted", "message": "metric failed"}]
            ),
            Expected(VERSION),
            "failed",
            "RolloutAborted: metric failed",
        ),
        (
            rollout(
                conditions=[{"type": "Progressing", "reason": "ProgressDeadlineExceeded", "message": "x"}]
            ),
            Expected(VERSION),
            "failed",
            "ProgressDeadlineExceeded",
        ),
    ],
    ids=[
        "canary-steps-left",
        "paused",
        "generation",
        "unavailable",
        "other-model",
        "other-image",
        "aborted",
        "deadline",
    ],
)
def test_anything_short_of_100_percent_waits_or_fails_with_its_reason(
    ro: dict[str, Any], expected: Expected, outcome: str, reason: str
) -> None:
    decision = decide(ro, expected)
    assert decision.outcome == outcome and reason in decision.reason, decision


class FakeArgoCD:
    """Answers GET /api/v1/applications/{app}[/resource] from a list of Rollouts; records every request."""

    def __init__(self, answers: list[dict[str, Any] | int]) -> None:
        self.answers, self.calls = answers, []  # an int answer is an HTTP error status
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                fake.calls.append(
                    {
                        "path": url.path,
                        "query": dict(urllib.parse.parse_qsl(url.query)),
                        "auth": self.headers.get("Authorization"),
                    }
                )
                if url.path.endswith("/resource"):
                    answer = fake.answers.pop(0) if len(fake.answers) > 1 else fake.answers[0]
                    if isinstance(answer, int):
                        self.send_response(answer)
                        self.end_headers()
                        return
                    body = json.dumps({"manifest": json.dumps(answer)}).encode()
                else:
                    body = b"{}"
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def fake() -> Iterator[FakeArgoCD]:
    server = FakeArgoCD([])
    yield server
    server.server.shutdown()


def _poll(fake: FakeArgoCD, answers: list[dict[str, Any] | int], timeout_s: float = 60) -> Any:
    fake.answers[:] = answers
    ticks = iter(range(10_000))
    return wait_for_rollout(
        ArgoCD(fake.url, "s3cret"),
        "forkcast-dev",
        "forkcast-dev",
        Expected(VERSION),
        timeout_s=timeout_s,
        clock=lambda: float(next(ticks)),
        sleep=lambda _: None,
        log=lambda _: None,
    )


def test_the_poll_waits_through_the_canary_and_succeeds_at_100_percent(fake: FakeArgoCD) -> None:
    old = copy.deepcopy(rollout())
    old["spec"]["template"]["metadata"]["annotations"]["forkcast.io/model-version"] = "older"
    steps = [
        old,
        rollout(stableRS="old", pauseConditions=[{"reason": "CanaryPauseStep"}]),
        503,
        rollout(stableRS="old"),
        rollout(),
    ]
    decision = _poll(fake, steps)
    assert decision.outcome == "done"
    refresh, *reads = fake.calls
    assert refresh["path"] == "/api/v1/applications/forkcast-dev" and refresh["query"] == {
        "refresh": "normal"
    }
    assert len(reads) == 5 and all(c["path"] == "/api/v1/applications/forkcast-dev/resource" for c in reads)
    assert reads[0]["query"] == {
        "namespace": "forkcast-dev",
        "resourceName": "inference",
        "group": "argoproj.io",
        "version": "v1alpha1",
        "kind": "Rollout",
    }
    # The token travels in the Authorization header only, never in a URL.
    assert {c["auth"] for c in fake.calls} == {"Bearer s3cret"}
    assert all("s3cret" not in json.dumps(c["query"]) + c["path"] for c in fake.calls)


def test_the_poll_fails_when_the_canary_aborts(fake: FakeArgoCD) -> None:
    aborted = rollout(stableRS="old", conditions=[{"reason": "RolloutAborted", "message": "online AUC low"}])
    decision = _poll(fake, [rollout(stableRS="old"), aborted])
    assert decision.outcome == "failed" and "RolloutAborted: online AUC low" in decision.reason


def test_the_poll_gives_up_at_its_deadline_with_the_last_state(fake: FakeArgoCD) -> None:
    decision = _poll(fake, [rollout(pauseConditions=[{"reason": "CanaryPauseStep"}])], timeout_s=3)
    assert decision.outcome == "failed" and "not at 100 % after 3 s" in decision.reason
    assert "CanaryPauseStep" in decision.reason


def test_cli_exit_status_follows_the_decision(
    fake: FakeArgoCD, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FORKCAST_ARGOCD_SERVER", fake.url)
    monkeypatch.setenv("FORKCAST_ARGOCD_TOKEN", "s3cret")
    argv = ["wait-rollout", "--app", "forkcast-dev", "--namespace", "forkcast-dev", "--interval", "0"]
    fake.answers[:] = [rollout()]
    assert main([*argv, "--model-version", VERSION]) == 0
    fake.answers[:] = [rollout(conditions=[{"reason": "RolloutAborted", "message": "p95"}])]
    assert main([*argv, "--model-version", VERSION]) == 1
    assert "failed: Degraded: RolloutAborted: p95" in capsys.readouterr().out
    monkeypatch.delenv("FORKCAST_ARGOCD_TOKEN")
    assert main([*argv, "--model-version", VERSION]) == 2
    assert "set FORKCAST_ARGOCD_SERVER and FORKCAST_ARGOCD_TOKEN" in capsys.readouterr().err


# --- code releases: every workload that runs a pinned image, Deployments as `kubectl rollout status` judges them ---

GATEWAY = "reg.example/gateway@sha256:" + "ef" * 32


def deployment(image: str = GATEWAY, **status: Any) -> dict[str, Any]:
    dep: dict[str, Any] = {
        "metadata": {"name": "gateway", "generation": 3},
        "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "gateway", "image": image}]}}},
        "status": {"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2},
    }
    dep["status"].update(status)
    return dep


@pytest.mark.parametrize(
    ("dep", "outcome", "reason"),
    [
        (deployment(), "done", "every replica runs"),
        (deployment("reg.example/gateway:0.1.0"), "wait", "runs reg.example/gateway:0.1.0, not"),
        (deployment(observedGeneration=2), "wait", "spec update to be observed"),
        (deployment(updatedReplicas=1), "wait", "1 of 2 updated replicas"),
        (deployment(replicas=3), "wait", "old replicas are pending termination"),
        (deployment(availableReplicas=1), "wait", "still becoming available"),
        (
            deployment(
                conditions=[{"type": "Progressing", "reason": "ProgressDeadlineExceeded", "message": "m"}]
            ),
            "failed",
            "ProgressDeadlineExceeded: m",
        ),
        (
            deployment("reg.example/other@sha256:" + "ef" * 32),
            "failed",
            "no container of this Deployment runs",
        ),
    ],
    ids=[
        "done",
        "old-image",
        "generation",
        "updated",
        "old-replicas",
        "available",
        "deadline",
        "no-container",
    ],
)
def test_a_deployment_is_done_only_when_kubectl_rollout_status_would_say_so(
    dep: dict[str, Any], outcome: str, reason: str
) -> None:
    decision = decide_deployment(dep, GATEWAY)
    assert decision.outcome == outcome and reason in decision.reason, decision


def test_aborted_reads_the_abort_flag_or_the_rollout_aborted_condition() -> None:
    assert aborted(rollout(abort=True))
    assert aborted(rollout(conditions=[{"type": "Progressing", "reason": "RolloutAborted"}]))
    # Twin: paused, progressing or healthy is not aborted.
    assert not aborted(rollout(pauseConditions=[{"reason": "CanaryPauseStep"}]))
    assert not aborted(rollout(conditions=[{"type": "Progressing", "reason": "ReplicaSetUpdated"}]))


class ResourceStandIn:
    """Argo CD answering /resource by kind and name from a dict of sequences (the last answer repeats)."""

    def __init__(self, answers: dict[tuple[str, str], list[dict[str, Any]]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, dict[str, str]]] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                stand_in.calls.append((url.path, query))
                body = b"{}"
                if url.path.endswith("/resource"):
                    seq = stand_in.answers[(query["kind"], query["resourceName"])]
                    live = seq.pop(0) if len(seq) > 1 else seq[0]
                    body = json.dumps({"manifest": json.dumps(live)}).encode()
                self.send_response(200)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _overlay_repo(tmp_path: Any) -> Any:
    """An overlay listing inference and gateway under reg.example, and the build's digest files."""
    kustomization = tmp_path / "manifests/overlays/dev/kustomization.yaml"
    kustomization.parent.mkdir(parents=True)
    kustomization.write_text(
        "# dev\nimages:\n  - name: forkcast-inference\n    newName: reg.example/inference\n    newTag: 0.1.0\n"
        "  - name: forkcast-gateway\n    newName: reg.example/gateway\n    newTag: 0.1.0\n"
    )
    digests = tmp_path / "images"
    digests.mkdir()
    (digests / "inference.digest").write_text(IMAGE.split("@")[1] + "\n")
    (digests / "gateway.digest").write_text(GATEWAY.split("@")[1] + "\n")
    (digests / "retrain.digest").write_text("sha256:" + "99" * 32 + "\n")  # not deployed: not awaited
    return digests


def test_wait_rollout_awaits_every_workload_of_every_pinned_image(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    digests = _overlay_repo(tmp_path)
    stand_in = ResourceStandIn(
        {
            ("Rollout", "inference"): [rollout(stableRS="old"), rollout()],
            ("Deployment", "gateway"): [deployment("reg.example/gateway:0.1.0"), deployment(updatedReplicas=1),
                                        deployment()],
        }
    )  # fmt: skip
    monkeypatch.setenv("FORKCAST_ARGOCD_SERVER", stand_in.url)
    monkeypatch.setenv("FORKCAST_ARGOCD_TOKEN", "t")
    argv = ["wait-rollout", "--app", "forkcast-dev", "--namespace", "forkcast-dev", "--interval", "0"]
    argv += [
        "--digests",
        str(digests),
        "--repo",
        str(tmp_path),
        "--workload",
        "Rollout/inference=forkcast-inference",
    ]
    assert main([*argv, "--workload", "Deployment/gateway=forkcast-gateway"]) == 0
    asked = [(q["kind"], q["resourceName"], q["group"]) for p, q in stand_in.calls if p.endswith("/resource")]
    assert ("Deployment", "gateway", "apps") in asked and ("Rollout", "inference", "argoproj.io") in asked
    assert "at 100 % on the released images" in capsys.readouterr().out
    # A gateway whose rollout hits its progress deadline fails the job, naming it.
    stand_in.answers[("Deployment", "gateway")] = [
        deployment(conditions=[{"type": "Progressing", "reason": "ProgressDeadlineExceeded", "message": "x"}])
    ]
    assert main([*argv, "--workload", "Deployment/gateway=forkcast-gateway"]) == 1
    assert "Deployment/gateway: Degraded: ProgressDeadlineExceeded" in capsys.readouterr().out
    # Twin: a pinned image no workload waits for (the gateway left out) is refused before anything is asked.
    assert main(argv) == 2
    assert "forkcast-gateway pinned but no --workload waits for it" in capsys.readouterr().err
    stand_in.server.shutdown()
