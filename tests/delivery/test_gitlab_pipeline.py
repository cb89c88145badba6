"""The GitLab pipeline's delivery structure (issue 10 §6), beyond the schema check in tests/ci: which sources run
which jobs, the retraining chain's order and artifacts, and every `forkcast-retrain` call parsed by the real CLI
parser, so a renamed subcommand or flag fails here and not in a scheduled pipeline at night.
"""

from __future__ import annotations

import itertools
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from forkcast_retrain.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
RETRAIN_CHAIN = ["prep", "train", "evaluate", "gate", "publish", "promote-dev"]
STAGES = ["lint", "test", "build", "retrain", "gate", "publish", "promote"]


class _GitLabLoader(yaml.SafeLoader):
    pass


_GitLabLoader.add_constructor("!reference", lambda loader, node: loader.construct_sequence(node))


def pipeline() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.load((ROOT / ".gitlab-ci.yml").read_text(), Loader=_GitLabLoader)
    return doc


def resolved(job: str) -> dict[str, Any]:
    """A job with its `extends` merged in (GitLab's rule: later keys win, nested mappings merged)."""
    jobs = pipeline()
    merged: dict[str, Any] = {}
    for parent in jobs[job].get("extends", []):
        merged.update(resolved(parent))
    merged.update({k: v for k, v in jobs[job].items() if k != "extends"})
    return merged


def sources(job: str) -> set[str]:
    rules = resolved(job)["rules"]
    # `!reference [job, key]` loads as that two-item list: look it up.
    flat = [r for rule in rules for r in (pipeline()[rule[0]][rule[1]] if isinstance(rule, list) else [rule])]
    return {m for r in flat if isinstance(r, dict) and "if" in r for m in _SOURCE.findall(r["if"])}


def conditions(job: str) -> list[str]:
    """The job's `if:` expressions, `!reference`s resolved."""
    rules = resolved(job)["rules"]
    flat = [r for rule in rules for r in (pipeline()[rule[0]][rule[1]] if isinstance(rule, list) else [rule])]
    return [r["if"] for r in flat if isinstance(r, dict) and "if" in r]


_SOURCE = re.compile(r'\$CI_PIPELINE_SOURCE == "(\w+)"')


def test_stages_are_in_delivery_order() -> None:
    assert pipeline()["stages"] == STAGES


@pytest.mark.parametrize("job", ["lint", "test", "build"])
def test_changes_run_lint_test_build(job: str) -> None:
    assert sources(job) == {"push", "merge_request_event"}


@pytest.mark.parametrize("job", [*RETRAIN_CHAIN, "promote-prod"])
def test_schedule_and_trigger_run_retraining(job: str) -> None:
    assert sources(job) == {"schedule", "trigger"}


def test_the_retraining_chain_needs_each_step_before() -> None:
    for before, job in itertools.pairwise(RETRAIN_CHAIN):
        assert before in resolved(job)["needs"], f"{job} does not need {before}"
    for job in RETRAIN_CHAIN[:-1]:
        assert resolved(job)["artifacts"]["paths"] == ["$RUN_DIR/"], f"{job} passes no run directory on"


def test_a_trigger_records_its_reason_and_refuses_missing_variables() -> None:
    script = "\n".join(resolved("prep")["script"])
    assert "${ALERT_REASON:?" in script and "${ALERT_NAME:?" in script and "${FORKCAST_DATA_DIR:?" in script
    assert "trigger.json" in script


def _retrain_calls() -> list[list[str]]:
    calls = []
    for name, job in pipeline().items():
        if not isinstance(job, dict) or name.startswith("."):
            continue
        job = resolved(name)
        for line in job.get("before_script", []) + job.get("script", []):
            words = shlex.split(line.replace("\n", " "))
            if words and words[0] == "forkcast-retrain":
                calls.append(words[1:])
    return calls


def test_every_retrain_call_parses_with_the_real_cli() -> None:
    calls = _retrain_calls()
    assert {c[0] for c in calls} == {"prep", "train", "evaluate", "gate", "publish", "promote"}
    parser = build_parser()
    for argv in calls:
        # A variable with a default takes it (`${RECIPE:-default}`); any other stands for a free-form value.
        defaults = [re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", w) for w in argv]
        parser.parse_args([w if "$" not in w else "x" for w in defaults])


def test_a_renamed_flag_would_fail_the_parse() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["gate", "--out", "run", "--champion-version", "auto"])


def test_a_rollback_trigger_reverts_and_does_not_retrain() -> None:
    """Argo Rollouts' abort notification triggers with ROLLBACK_NAMESPACE: only `rollback` runs."""
    assert conditions("rollback") == ['$CI_PIPELINE_SOURCE == "trigger" && $ROLLBACK_NAMESPACE']
    for job in [*RETRAIN_CHAIN, "promote-prod"]:
        trigger_rules = [c for c in conditions(job) if '"trigger"' in c]
        assert trigger_rules == ['$CI_PIPELINE_SOURCE == "trigger" && $ROLLBACK_NAMESPACE == null'], job
    script = "\n".join(resolved("rollback")["script"])
    assert "forkcast-retrain promote --rollback" in script and "${GITOPS_TOKEN:?" in script


def test_rollback_maps_every_overlay_namespace_to_its_overlay() -> None:
    script = "\n".join(resolved("rollback")["script"])
    mapping = dict(re.findall(r"^\s*([\w-]+)\) OVERLAY=(\w+) ;;", script, flags=re.MULTILINE))
    overlays = {
        p.parent.name: yaml.safe_load(p.read_text())["namespace"]
        for p in (ROOT / "manifests/overlays").glob("*/kustomization.yaml")
    }
    assert mapping == {namespace: overlay for overlay, namespace in overlays.items()}


def test_the_rollout_notifies_the_pipeline_on_abort() -> None:
    (config,) = yaml.safe_load_all((ROOT / "deploy/argo-rollouts/notification-configmap.yaml").read_text())
    rollout = next(
        d
        for d in yaml.safe_load_all((ROOT / "rollouts/inference-rollout.yaml").read_text())
        if d["kind"] == "Rollout"
    )
    subscriptions = {
        k.removeprefix("notifications.argoproj.io/subscribe.")
        for k in rollout["metadata"]["annotations"]
        if k.startswith("notifications.argoproj.io/")
    }
    assert subscriptions == {"on-rollout-aborted.gitlab-trigger"}
    data = config["data"]
    assert (
        "service.webhook.gitlab-trigger" in data
        and "$gitlab-trigger-token" in data["service.webhook.gitlab-trigger"]
    )
    (send,) = yaml.safe_load(data["trigger.on-rollout-aborted"])
    (template,) = send["send"]
    body = yaml.safe_load(data[f"template.{template}"])["webhook"]["gitlab-trigger"]["body"]
    assert "variables[ROLLBACK_NAMESPACE]={{.rollout.metadata.namespace}}" in body
