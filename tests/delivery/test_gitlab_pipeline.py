"""The GitLab pipeline's delivery structure (issue 10 §6), beyond the schema check in tests/ci: which sources run
which jobs, the retraining chain's order and artifacts, and every `forkcast-retrain` call parsed by the real CLI
parser, so a renamed subcommand or flag fails here and not in a scheduled pipeline at night.
"""

from __future__ import annotations

import copy
import fnmatch
import functools
import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from forkcast_retrain import workflow
from forkcast_retrain.cli import build_parser
from forkcast_retrain.cli import main as retrain_main
from forkcast_retrain.errors import DataError
from forkcast_retrain.images import ci_image_refs, pin_ci_image

ROOT = Path(__file__).resolve().parents[2]
RETRAIN_CHAIN = ["prep", "train", "evaluate", "gate", "publish", "promote-dev"]
TRAIN_IN_CI = {"prep", "train", "evaluate"}
TRAIN_ON_CLUSTER = {"train-on-cluster"}
STAGES = ["lint", "test", "build", "retrain", "gate", "publish", "promote", "verify", "propose"]
# Jobs that push to Git: one at a time (resource_group). Pushes to the default branch start no pipeline (ci.skip);
# pushes of a release/prod-* branch open a merge request whose pipeline runs manifests-check (no ci.skip).
MAIN_WRITERS = ["promote-dev", "release-images", "rollback"]
PROD_PROPOSERS = ["promote-prod", "propose-prod-images"]
GIT_WRITERS = [*MAIN_WRITERS, *PROD_PROPOSERS]
# The bootstrap reference of the retrain image; release-images replaces it with <repository>/retrain@<digest>.
RETRAIN_IMAGE = "registry.gitlab.com/forkcast/forkcast/retrain:main"
GITOPS_URL = "https://gitlab.com/forkcast/forkcast.git"


RETRAIN_REPOSITORY = RETRAIN_IMAGE.rsplit(":", 1)[0]
TEMPLATE = (
    "workflows/workflowtemplate.yaml"  # the Argo WorkflowTemplate, whose default image release-images pins
)
BUILT = "sha256:" + "5e" * 32


def committed_retrain_image() -> str:
    """The one retrain reference .gitlab-ci.yml holds (every occurrence the same)."""
    (ref,) = set(ci_image_refs((ROOT / ".gitlab-ci.yml").read_text()))
    return ref


class _GitLabLoader(yaml.SafeLoader):
    pass


_GitLabLoader.add_constructor("!reference", lambda loader, node: loader.construct_sequence(node))


@functools.cache
def documents() -> tuple[dict[str, Any], dict[str, Any]]:
    """The file's two YAML documents: the header (``spec: inputs``) and the pipeline before interpolation."""
    header, body = yaml.load_all((ROOT / ".gitlab-ci.yml").read_text(), Loader=_GitLabLoader)
    return header, body


def inputs_spec() -> dict[str, dict[str, Any]]:
    spec: dict[str, dict[str, Any]] = documents()[0]["spec"]["inputs"]
    return spec


_INPUT = re.compile(r"\$\[\[\s*inputs\.(\w+)\s*\]\]")


def interpolate(node: Any, given: dict[str, str]) -> Any:
    """``node`` with every ``$[[ inputs.NAME ]]`` replaced as GitLab does when it creates a pipeline: the given
    value, else the input's default; an input the header does not declare is an error (GitLab's too)."""
    if isinstance(node, dict):
        return {k: interpolate(v, given) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, given) for v in node]
    if not isinstance(node, str):
        return node
    spec = inputs_spec()

    def value(m: re.Match[str]) -> str:
        assert m[1] in spec, f"$[[ inputs.{m[1]} ]] is not declared in spec:inputs"
        return str(given.get(m[1], spec[m[1]].get("default")))

    return _INPUT.sub(value, node)


@functools.cache  # parsed once: the rules tests below resolve hundreds of jobs
def pipeline() -> dict[str, Any]:
    """The pipeline as GitLab builds it for a caller that sends no inputs (every input at its default)."""
    doc: dict[str, Any] = interpolate(documents()[1], {})
    return doc


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """GitLab's `extends` merge: mappings merge key by key (recursively), anything else (lists, scalars) the
    override replaces. So `artifacts: {}` in a child keeps the parent's `artifacts: paths` (GitLab docs, "Optimize
    GitLab CI/CD configuration files", merge details: "a reverse deep merge based on the keys")."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def resolve(jobs: dict[str, Any], job: str) -> dict[str, Any]:
    """A job of ``jobs`` with its `extends` merged in as GitLab does (parents in order, then the job itself)."""
    parents = jobs[job].get("extends", [])
    merged: dict[str, Any] = {}
    for parent in [parents] if isinstance(parents, str) else parents:
        merged = deep_merge(merged, resolve(jobs, parent))
    return deep_merge(merged, {k: v for k, v in jobs[job].items() if k != "extends"})


def resolved(job: str) -> dict[str, Any]:
    return resolve(pipeline(), job)


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


def needs(job: str) -> dict[str, bool]:
    """The job's needs: name → optional (GitLab accepts a bare name or `{job: name, optional: true}`)."""
    return {
        (n if isinstance(n, str) else n["job"]): (False if isinstance(n, str) else bool(n.get("optional")))
        for n in resolved(job).get("needs", [])
    }


def _term(term: str, variables: dict[str, str]) -> bool:
    """One operand of a rules `if:`, in the few forms this pipeline uses (`$A`, `$A == "x"`, `$A == null`,
    `$A == $B`, `$A =~ /regex/`: GitLab's RE2 pattern, here as Python's re with `\\/` unescaped)."""
    regex = re.fullmatch(r"\$(\w+)\s*=~\s*/(.*)/", term.strip())
    if regex:
        value = variables.get(regex[1])
        return value is not None and re.search(regex[2].replace("\\/", "/"), value) is not None
    m = re.fullmatch(r'\$(\w+)(?:\s*(==|!=)\s*(null|"[^"]*"|\$\w+))?', term.strip())
    assert m, f"rules expression {term!r} is outside what this test evaluates"
    name, op, value = m.groups()
    actual = variables.get(name)
    if op is None:
        return bool(actual)
    if value == "null":
        equal = actual is None
    elif value.startswith("$"):
        equal = actual == variables.get(value[1:])
    else:
        equal = actual == value.strip('"')
    return equal if op == "==" else not equal


def _holds(rule: dict[str, Any], variables: dict[str, str]) -> bool:
    """A rule's `if` (absent: true); a rule with `changes` holds only when ``__changed__`` lists a matching
    file (gitlab-ci-local and GitLab both compare with the pushed commits; here the test says what changed)."""
    if "if" in rule and not all(_term(t, variables) for t in rule["if"].split("&&")):
        return False
    if "changes" in rule:
        changed = variables.get("__changed__", "").split()
        return any(fnmatch.fnmatch(f, g) for f in changed for p in rule["changes"] for g in _globs(p))
    return True


def _globs(pattern: str) -> list[str]:
    """GitLab's `{a,b}/**/*` (Ruby File.fnmatch with FNM_EXTGLOB) as fnmatch patterns: braces expanded, `**/*`
    as `*` (fnmatch's `*` crosses `/`)."""
    m = re.search(r"\{([^}]*)\}", pattern)
    if m is None:
        return [pattern.replace("**/*", "*")]
    return [g for alt in m[1].split(",") for g in _globs(pattern[: m.start()] + alt + pattern[m.end() :])]


def selected(job: str, variables: dict[str, str]) -> bool:
    """GitLab's rules: the first rule whose `if` holds decides; `when: never` excludes the job."""
    rules = resolved(job)["rules"]
    flat = [r for rule in rules for r in (pipeline()[rule[0]][rule[1]] if isinstance(rule, list) else [rule])]
    for rule in flat:
        if _holds(rule, variables):
            return rule.get("when", "on_success") != "never"
    return False


def pipeline_runs(variables: dict[str, str]) -> bool:
    """`workflow: rules`: whether GitLab creates a pipeline at all for these variables."""
    for rule in pipeline()["workflow"]["rules"]:
        if _holds(rule, variables):
            return rule.get("when", "always") != "never"
    return False


def jobs_for(variables: dict[str, str]) -> set[str]:
    """The jobs a pipeline with these variables contains (the file's own defaults, then the pipeline's)."""
    values = {**pipeline()["variables"], **variables}
    return {
        name
        for name, job in pipeline().items()
        if isinstance(job, dict) and not name.startswith(".") and name != "workflow"
        if "rules" in resolved(name) and selected(name, values)
    }


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
        assert before in needs(job), f"{job} does not need {before}"
    for job in RETRAIN_CHAIN[:-1]:
        assert resolved(job)["artifacts"]["paths"] == ["$RUN_DIR/"], f"{job} passes no run directory on"


def _record_trigger(
    tmp_path: Path, source: str, given: dict[str, str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """prep's before_script (.records-trigger) with ``given`` inputs interpolated, run as the runner runs it."""
    lines = interpolate(resolve(documents()[1], "prep")["before_script"], given)
    base = {"PATH": os.environ["PATH"], "RUN_DIR": "run", "CI_PIPELINE_SOURCE": source}
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", "\n".join(lines)],
        cwd=tmp_path,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_trigger_records_its_inputs_in_trigger_json(tmp_path: Path) -> None:
    reason = "Online AUC of v2 is 0.620, below its floor (offline AUC - 0.05, at least 0.70)"
    # A variable of the old interface, set as a trigger would have, is not what is recorded.
    result = _record_trigger(
        tmp_path,
        "trigger",
        {"alert_name": "OnlineAucLow", "alert_reason": reason},
        {"ALERT_NAME": "FeatureDriftHigh", "ALERT_REASON": "forged"},
    )
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "run" / "trigger.json").read_text())
    assert record == {
        "CI_PIPELINE_SOURCE": "trigger",
        "CI_PIPELINE_URL": "",
        "alert_name": "OnlineAucLow",
        "alert_reason": reason,
    }
    # The data is the pipeline's dataset input (here its default), read from S3: no runner directory.
    prep = "\n".join(resolved("prep")["script"])
    assert '--data "s3://forkcast-lake/datasets/full" --data-version ""' in prep
    assert "FORKCAST_DATA_DIR" not in (ROOT / ".gitlab-ci.yml").read_text()


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({}, "a triggered retraining needs inputs alert_name"),
        ({"alert_name": "OnlineAucLow"}, "a triggered retraining needs inputs alert_reason"),
    ],
    ids=["no-alert", "no-reason"],
)
def test_a_trigger_without_its_alert_stops_before_recording(
    tmp_path: Path, given: dict[str, str], message: str
) -> None:
    result = _record_trigger(tmp_path, "trigger", given)
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "run" / "trigger.json").exists()


def test_a_scheduled_run_records_no_alert(tmp_path: Path) -> None:
    result = _record_trigger(tmp_path, "schedule", {})
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "run" / "trigger.json").read_text())
    assert (record["alert_name"], record["alert_reason"]) == ("none", "")


def test_jobs_read_the_alert_from_inputs_not_from_variables() -> None:
    """Variables a trigger could send (ALERT_*, ROLLBACK_*) are read by no job; the inputs are declared once."""
    text = (ROOT / ".gitlab-ci.yml").read_text()
    assert not re.search(r"\$\{?(ALERT|ROLLBACK)_", text)
    used = set(_INPUT.findall(yaml.dump(documents()[1])))
    assert used == set(inputs_spec()) == {"alert_name", "alert_reason", "dataset", "dataset_version"}


# What bash expands inside a double-quoted word, or what ends it (GNU bash manual, "Double Quotes"): the inputs are
# interpolated into such words, so the reason's regex must admit none of these.
_EXPANDED_IN_DOUBLE_QUOTES = set('$`"\\!\n')


def test_the_reason_regex_admits_nothing_the_shell_expands() -> None:
    pattern = re.compile(inputs_spec()["alert_reason"]["regex"])
    admitted = {chr(c) for c in range(128) if pattern.fullmatch(chr(c))}
    assert admitted and not admitted & _EXPANDED_IN_DOUBLE_QUOTES, sorted(
        admitted & _EXPANDED_IN_DOUBLE_QUOTES
    )
    assert pattern.fullmatch("Online AUC of 20261123T101500Z-0123abcd is 0.612, below its floor (0.70)")
    assert not pattern.fullmatch("x" * 201) and not pattern.fullmatch('x"; curl evil | sh; "')
    assert inputs_spec()["alert_reason"]["default"] == ""
    # Twin: a permissive regex is reported by the same check.
    loose = {chr(c) for c in range(128) if re.fullmatch(r"^[^\n]{0,200}$", chr(c))}
    assert loose & _EXPANDED_IN_DOUBLE_QUOTES == {"$", "`", '"', "\\", "!"}


@pytest.mark.parametrize("name", ["dataset", "dataset_version"])
def test_the_dataset_inputs_admit_nothing_the_shell_expands(name: str) -> None:
    pattern = re.compile(inputs_spec()[name]["regex"])
    admitted = {
        chr(c) for c in range(128) if pattern.fullmatch(("s3://abc/" if name == "dataset" else "") + chr(c))
    }
    assert admitted and not admitted & _EXPANDED_IN_DOUBLE_QUOTES, sorted(
        admitted & _EXPANDED_IN_DOUBLE_QUOTES
    )


@pytest.mark.parametrize(
    ("name", "value", "admitted"),
    [
        ("dataset", "s3://forkcast-lake/datasets/full", True),
        ("dataset", "s3://forkcast-lake/training/2026-12-05/", True),
        ("dataset", "/srv/data/full", False),  # a runner's disk
        ("dataset", "s3://forkcast-lake", False),  # a bucket, no dataset
        ("dataset", 's3://b/x"; curl evil | sh; "', False),
        ("dataset_version", "", True),
        ("dataset_version", "12", True),
        ("dataset_version", "2026-12-05T02:00:00Z", True),
        ("dataset_version", "2026-12-05T02:00:00+01:00", True),
        ("dataset_version", "2026-12-05T02:00:00", False),  # no zone: prep would refuse it
        ("dataset_version", "latest; id", False),
    ],
)
def test_the_dataset_inputs_admit_a_lake_uri_and_version_only(name: str, value: str, admitted: bool) -> None:
    assert bool(re.fullmatch(inputs_spec()[name]["regex"], value)) is admitted


def test_ci_and_the_workflow_take_the_dataset_under_the_same_names() -> None:
    """One dataset URI and version: the inputs' names are the Workflow's parameters, passed through unchanged."""
    (call,) = [c for c in documents()[1]["train-on-cluster"]["script"] if "forkcast_retrain.workflow" in c]
    params = {p["name"] for p in workflow.workflow_template()["spec"]["arguments"]["parameters"]}
    for name in ("dataset", "dataset_version"):
        assert name in params
        assert f'--param {name}="$[[ inputs.{name} ]]"' in call
    default = inputs_spec()["dataset"]["default"]
    workflow.check_dataset_uri(default)  # the template accepts what CI sends by default
    assert (
        workflow.workflow({"dataset": default, "dataset_version": ""})["spec"]["arguments"]["parameters"][0][
            "value"
        ]
        == default
    )


def routed_to_retrain(docs: list[dict[str, Any]]) -> set[str]:
    """Names of the alerting rules (PrometheusRule) whose labels match an AlertmanagerConfig route that sends to
    the alert receiver's webhook (prometheus-operator AlertmanagerConfig: matchType =, != and =~, RE2 anchored
    as Alertmanager anchors matchers)."""
    receivers = {
        r["name"]
        for d in docs
        if d.get("kind") == "AlertmanagerConfig"
        for r in d["spec"].get("receivers", [])
        if any("alert-receiver" in w.get("url", "") for w in r.get("webhookConfigs", []))
    }
    routes = [
        r
        for d in docs
        if d.get("kind") == "AlertmanagerConfig"
        for r in d["spec"]["route"].get("routes", [])
        if r.get("receiver") in receivers
    ]
    rules = [
        rule
        for d in docs
        if d.get("kind") == "PrometheusRule"
        for group in d["spec"]["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]

    def holds(m: dict[str, Any], labels: dict[str, str]) -> bool:
        value, kind = labels.get(m["name"], ""), m.get("matchType", "=")
        assert kind in ("=", "!=", "=~"), f"matchType {kind} is outside what this test evaluates"
        if kind == "=~":
            return re.fullmatch(m["value"], value) is not None
        return bool((value == m["value"]) == (kind == "="))

    return {
        rule["alert"]
        for rule in rules
        for route in routes
        if all(holds(m, rule.get("labels", {})) for m in route.get("matchers", []))
    }


def test_alert_name_options_are_the_alerts_routed_to_the_receiver() -> None:
    from forkcast_delivery.render import load_all, overlay_dirs, render_text

    rules = load_all(render_text(ROOT / "manifests/observability"))
    for overlay in overlay_dirs(ROOT):
        routed = routed_to_retrain([*rules, *load_all(render_text(overlay))])
        assert routed and set(inputs_spec()["alert_name"]["options"]) == routed | {"none"}, overlay.name
    assert inputs_spec()["alert_name"]["default"] == "none"
    # Twin: a new action=retrain rule in the render is an option the header lacks.
    extra = {"kind": "PrometheusRule", "spec": {"groups": [{"rules": [
        {"alert": "NewRetrainAlert", "labels": {"action": "retrain"}}]}]}}  # fmt: skip
    docs = [*rules, *load_all(render_text(ROOT / "manifests/overlays/dev")), extra]
    assert routed_to_retrain(docs) - set(inputs_spec()["alert_name"]["options"]) == {"NewRetrainAlert"}


def _flat(lines: list[Any]) -> list[str]:
    """Script lines with `!reference [job, key]` (loaded as a two-item list) replaced by what it names."""
    out: list[str] = []
    for line in lines:
        out += _flat(resolved(line[0])[line[1]]) if isinstance(line, list) else [line]
    return out


def _retrain_calls() -> list[list[str]]:
    calls = []
    for name, job in pipeline().items():
        if not isinstance(job, dict) or name.startswith(".") or name == "workflow":
            continue
        job = resolved(name)
        for line in _flat(job.get("before_script", []) + job.get("script", [])):
            # ${VAR:+words} expands to its words when VAR is set: parse that (the longer) form.
            words = shlex.split(re.sub(r"\$\{\w+:\+(.*?)\}", r"\1", line.replace("\n", " ")))
            if words and words[0] == "forkcast-retrain":
                calls.append(words[1:])
    return calls


def test_every_retrain_call_parses_with_the_real_cli() -> None:
    calls = _retrain_calls()
    assert {c[0] for c in calls} == {
        *("prep", "train", "evaluate", "gate", "publish", "promote"),
        *("rollback", "set-images", "wait-rollout", "sync-champion"),
    }
    parser = build_parser()
    for argv in calls:
        # A variable with a default takes it (`${RECIPE:-default}`); any other stands for a free-form value.
        defaults = [re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", w) for w in argv]
        # The file's own variables take their values (VERIFY_TIMEOUT is a number the parser checks).
        own = {k: str(v) for k, v in pipeline()["variables"].items() if "$" not in str(v)}
        defaults = [own.get(w.strip("${}"), w) if re.fullmatch(r"\$\{?\w+\}?", w) else w for w in defaults]
        parser.parse_args([w if "$" not in w else "x" for w in defaults])


def test_a_renamed_flag_would_fail_the_parse() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["gate", "--out", "run", "--champion-version", "auto"])


def test_a_rollback_pipeline_reverts_and_does_nothing_else() -> None:
    """Argo Rollouts' abort notification creates an API pipeline with no variables: only `rollback` runs, and it
    reads nothing from variables a caller could set (no ROLLBACK_*): Argo CD says what aborted."""
    variables = {"CI_PIPELINE_SOURCE": "api"}
    assert pipeline_runs(variables)
    assert jobs_for(variables) == {"rollback"}
    # A trigger (the alert receiver) retrains; it can no longer start a rollback.
    assert "rollback" not in jobs_for({"CI_PIPELINE_SOURCE": "trigger"})
    for name in [*RETRAIN_CHAIN, "promote-prod"]:
        assert [c for c in conditions(name) if '"trigger"' in c] == ['$CI_PIPELINE_SOURCE == "trigger"'], name
    job = resolved("rollback")
    script = "\n".join(_flat(job["before_script"]) + job["script"])
    (call,) = [line for line in job["script"] if line.startswith("forkcast-retrain rollback")]
    assert call.startswith("forkcast-retrain rollback --app forkcast-dev --app forkcast-prod ")
    assert "${GITOPS_TOKEN:?" in script and "--push-option ci.skip" in call
    assert not re.search(r"\$\{?(ROLLBACK|ROLLOUT)_", (ROOT / ".gitlab-ci.yml").read_text())
    # exit 3 = reverted and pushed, MLflow not updated: a warning on the pipeline, not a failure.
    assert job["allow_failure"] == {"exit_codes": [3]}


def test_rollback_asks_about_every_application_that_deploys_an_overlay() -> None:
    (call,) = [
        line for line in resolved("rollback")["script"] if line.startswith("forkcast-retrain rollback")
    ]
    asked = set(re.findall(r"--app ([\w-]+)", call))
    apps = [yaml.safe_load(p.read_text()) for p in (ROOT / "deploy/argocd").glob("app-*.yaml")]
    overlays = {
        a["metadata"]["name"] for a in apps if a["spec"]["source"]["path"].startswith("manifests/overlays/")
    }
    # Every overlay a cluster runs has its own Application, except those that say who runs them instead: `local`
    # (forkcast.io/deployed-by: `forkcast-local up` on this machine) and an alternative to an overlay whose
    # Application syncs it when an operator points it there (forkcast.io/synced-by, e.g. prod-cluster).
    annotated = {"forkcast.io/deployed-by", "forkcast.io/synced-by"}
    cluster = []
    for path in (ROOT / "manifests/overlays").glob("*/"):
        meta = yaml.safe_load((path / "kustomization.yaml").read_text()).get("metadata") or {}
        synced_by = (meta.get("annotations") or {}).get("forkcast.io/synced-by")
        assert synced_by is None or synced_by in overlays, f"{path.name}: synced by unknown {synced_by}"
        if not annotated & set(meta.get("annotations") or {}):
            cluster.append(path.name)
    assert asked == overlays and len(overlays) == len(cluster), (sorted(asked), sorted(overlays), cluster)


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
    service = yaml.safe_load(data["service.webhook.gitlab-trigger"])
    # The host is the operators' (a secret key), not a placeholder; the token rides in a header, never the URL.
    assert service["url"] == "$gitlab-api-url/projects/$gitlab-project-id/pipeline"
    assert {h["name"]: h["value"] for h in service["headers"]}["PRIVATE-TOKEN"] == "$gitlab-token"
    assert "token" not in service["url"].lower() and "example.com" not in service["url"]
    (send,) = yaml.safe_load(data["trigger.on-rollout-aborted"])
    (template,) = send["send"]
    body = yaml.safe_load(data[f"template.{template}"])["webhook"]["gitlab-trigger"]["body"]
    # Only the ref: no variables, so "Minimum role to use pipeline variables" can forbid them for this path.
    assert json.loads(body) == {"ref": "main"}


def test_the_receiver_and_argo_start_pipelines_with_separate_credentials() -> None:
    """Two callers, two tokens: the alert receiver's trigger token (a Secret mounted from the overlays' render) and
    Argo Rollouts' API token (its notification Secret, in a header); neither is the other's. (That the receiver
    sends its token in the POST body is monitoring/tests/integration/test_receiver.py's to check.)"""
    from forkcast_delivery.render import load_all, render_text

    docs = load_all(render_text(ROOT / "manifests/overlays/dev"))
    receiver = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "alert-receiver"
    )
    secrets = {
        v["secret"]["secretName"] for v in receiver["spec"]["template"]["spec"]["volumes"] if "secret" in v
    }
    assert "forkcast-gitlab-trigger" in secrets
    (config,) = yaml.safe_load_all((ROOT / "deploy/argo-rollouts/notification-configmap.yaml").read_text())
    service = config["data"]["service.webhook.gitlab-trigger"]
    # The notifications engine reads `$key` from its own Secret (argo-rollouts-notification-secret) only.
    assert config["metadata"]["namespace"] == "argo-rollouts" and "gitlab-trigger/token" not in service
    assert "$gitlab-token" in service and "token" not in yaml.safe_load(service)["url"].lower()


def test_extends_deep_merges_so_an_empty_artifacts_keeps_the_parents_paths() -> None:
    """The resolver models GitLab: a shallow merge would have said `artifacts: {}` clears the paths."""
    jobs = {".parent": {"artifacts": {"paths": ["run/"], "expire_in": "1 day"}}, "job": {"extends": [".parent"],
            "artifacts": {}}}  # fmt: skip
    assert resolve(jobs, "job")["artifacts"] == {"paths": ["run/"], "expire_in": "1 day"}
    shallow = {**jobs[".parent"], **{k: v for k, v in jobs["job"].items() if k != "extends"}}
    assert shallow["artifacts"] == {}  # what the old resolver claimed, and GitLab never did
    # Lists are replaced, not merged.
    jobs["job"]["artifacts"] = {"paths": ["other/"]}
    assert resolve(jobs, "job")["artifacts"]["paths"] == ["other/"]


@pytest.mark.parametrize("job", [*GIT_WRITERS, "verify-dev-model", "verify-dev-images", "sync-champion"])
def test_no_git_writing_or_verifying_job_uploads_a_run_directory(job: str) -> None:
    assert "artifacts" not in resolved(job), resolved(job).get("artifacts")


def _push_call(job: str) -> str:
    (call,) = [line for line in _flat(resolved(job)["script"]) if line.startswith("forkcast-retrain")]
    return call


@pytest.mark.parametrize("job", GIT_WRITERS)
def test_git_writers_take_turns_and_only_pushes_to_main_skip_ci(job: str) -> None:
    assert resolved(job)["resource_group"] == "gitops"
    call = _push_call(job)
    assert "--no-push" not in call
    if job in MAIN_WRITERS:
        assert "--push-option ci.skip" in call and "--branch" not in call
    else:  # the release/prod-* branch of a merge request: its merge request pipeline must run
        assert "ci.skip" not in call and '--branch "release/prod-' in call
        assert "--push-option merge_request.create" in call


def test_a_prod_release_merge_request_runs_only_manifests_check() -> None:
    mr = {
        "CI_PIPELINE_SOURCE": "merge_request_event",
        "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME": "release/prod-v7",
    }
    assert pipeline_runs(mr) and jobs_for(mr) == {"manifests-check"}
    assert resolved("manifests-check")["script"] == ["make manifests-check"]
    # Its branch push starts no pipeline of its own (the merge request pipeline is the one).
    push = {"CI_PIPELINE_SOURCE": "push", "CI_COMMIT_BRANCH": "release/prod-images-abc123"}
    assert not pipeline_runs(push)
    # Twin: any other merge request runs lint/test/build and not the light job.
    other = {**mr, "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME": "feature/x"}
    assert {"lint", "test", "build"} <= jobs_for(other) and "manifests-check" not in jobs_for(other)
    assert pipeline_runs({"CI_PIPELINE_SOURCE": "push", "CI_COMMIT_BRANCH": "feature/x"})


def secret_runners_with_variable_images(jobs: dict[str, Any]) -> list[str]:
    """Jobs that run forkcast-retrain or clone with GITOPS_TOKEN (they hold the GitOps / S3 / MLflow secrets) and
    take their image from a variable (which a pipeline variable could replace)."""
    found = []
    for name, raw in jobs.items():
        if name.startswith(".") or name in ("workflow", "variables", "stages") or not isinstance(raw, dict):
            continue
        job = resolve(jobs, name)
        lines = [str(x) for x in job.get("before_script", []) + job.get("script", [])]
        holds = any(
            "forkcast-retrain" in line or "GITOPS_TOKEN" in line or ".gitops" in line for line in lines
        )
        image = job.get("image", {})
        name_of = image.get("name", "") if isinstance(image, dict) else str(image)
        if holds and "$" in name_of:
            found.append(f"{name}: image {name_of}")
    return found


def test_jobs_holding_secrets_run_a_literal_image() -> None:
    assert secret_runners_with_variable_images(pipeline()) == []
    # The committed reference: the bootstrap tag or, once release-images ran, the digest it pinned.
    assert resolved("rollback")["image"]["name"] == committed_retrain_image()
    # Twin: the image from $RETRAIN_IMAGE (what the pipeline had) is reported, by job and image.
    broken = copy.deepcopy(pipeline())
    broken[".retrain-image"]["image"]["name"] = "$RETRAIN_IMAGE"
    assert "rollback: image $RETRAIN_IMAGE" in secret_runners_with_variable_images(broken)


def clone_problems(lines: list[str]) -> list[str]:
    """`git clone` lines whose URL is not a literal or carries a token (the token goes in a scoped header)."""
    problems = []
    for line in lines:
        if "git clone" not in line:
            continue
        words = shlex.split(line.replace("\n", " "))
        urls = [w for w in words if "://" in w and not w.startswith("http.")]
        if len(urls) != 1 or "$" in urls[0] or "@" in urls[0]:
            problems.append(f"clone URL not literal or with credentials: {line}")
        elif not any(w.startswith(f"http.{urls[0].split('/forkcast/')[0]}/.extraHeader=") for w in words):
            problems.append(f"token not in a header scoped to the clone's host: {line}")
    return problems


def test_the_gitops_clone_url_is_literal_and_the_token_rides_in_a_scoped_header() -> None:
    lines = [str(x) for x in resolved(".gitops")["before_script"]]
    assert clone_problems(lines) == [] and any(GITOPS_URL in line for line in lines)
    # Twin: the old URL variable with the token in it.
    old = 'git clone --quiet --branch "$CI_DEFAULT_BRANCH" "$GITOPS_REPO_URL" "$GITOPS_DIR"'
    assert clone_problems([old]) == [f"clone URL not literal or with credentials: {old}"]


def test_one_pipeline_per_change() -> None:
    """A push to a branch with an open merge request runs only the merge request pipeline."""
    assert not pipeline_runs({"CI_PIPELINE_SOURCE": "push", "CI_OPEN_MERGE_REQUESTS": "forkcast/forkcast!7"})
    assert pipeline_runs({"CI_PIPELINE_SOURCE": "merge_request_event", "CI_OPEN_MERGE_REQUESTS": "x!7"})
    assert pipeline_runs({"CI_PIPELINE_SOURCE": "push"})


def test_prod_is_proposed_only_after_dev_reached_100_percent() -> None:
    assert "verify-dev-model" in needs("promote-prod") and "promote-dev" in needs("verify-dev-model")
    assert "verify-dev-images" in needs("propose-prod-images") and "release-images" in needs(
        "verify-dev-images"
    )
    # Prod gets the build's digest files (what verify-dev-images awaited), not the dev overlay at that moment.
    assert "build" in needs("propose-prod-images") and "build" in needs("verify-dev-images")
    proposal = _push_call("propose-prod-images")
    assert "--digests images" in proposal and "--from-overlay" not in proposal
    for verify in ("verify-dev-model", "verify-dev-images"):
        (call,) = [line for line in resolved(verify)["script"] if line.startswith("forkcast-retrain")]
        assert call.startswith("forkcast-retrain wait-rollout") and '--namespace "$DEV_NAMESPACE"' in call
    order = pipeline()["stages"]
    assert order.index("promote") < order.index("verify") < order.index("propose")


MAIN = {"CI_PIPELINE_SOURCE": "push", "CI_COMMIT_BRANCH": "main", "CI_DEFAULT_BRANCH": "main"}


def test_champion_moves_only_when_the_prod_release_lands_on_the_default_branch() -> None:
    merged = {**MAIN, "__changed__": "manifests/overlays/prod/model-release.yaml"}
    assert "sync-champion" in jobs_for(merged)
    assert "sync-champion" not in jobs_for({**MAIN, "__changed__": "services/gateway/src/x.py"})
    assert "sync-champion" not in jobs_for({**merged, "CI_COMMIT_BRANCH": "release/prod-x"})
    for source in ("schedule", "trigger"):  # retraining proposes prod; it never moves champion itself
        assert "sync-champion" not in jobs_for({"CI_PIPELINE_SOURCE": source})
    (call,) = resolved("sync-champion")["script"][-1:]
    # The release file of a fresh fetch of the default branch, serialized with rollback (one resource_group).
    assert call == (
        'forkcast-retrain sync-champion --overlay prod --repo "$CI_PROJECT_DIR" --fetch-branch "$CI_DEFAULT_BRANCH"'
    )
    assert resolved("sync-champion")["resource_group"] == resolved("rollback")["resource_group"] == "gitops"


def unawaited_workloads(docs: list[dict[str, Any]], workloads: set[str]) -> list[str]:
    """Workloads of a render that run a pinned forkcast image but are missing from verify-dev-images' --workload
    list, and listed ones the render does not have (KIND/NAME=IMAGE, sorted)."""
    rendered = set()
    for doc in docs:
        if doc.get("kind") not in ("Deployment", "Rollout"):
            continue
        for c in doc["spec"]["template"]["spec"]["containers"]:
            for name in ("gateway", "inference", "monitoring", "lake"):
                if c["image"].startswith(f"registry.gitlab.com/forkcast/forkcast/{name}"):
                    rendered.add(f"{doc['kind']}/{doc['metadata']['name']}=forkcast-{name}")
    return sorted(rendered ^ workloads)


def _verify_workloads() -> set[str]:
    (call,) = [
        line for line in resolved("verify-dev-images")["script"] if line.startswith("forkcast-retrain")
    ]
    return set(re.findall(r"--workload (\S+)", call))


def test_verify_dev_images_awaits_every_workload_that_runs_a_pinned_image() -> None:
    from forkcast_delivery.render import load_all, render_text

    docs = load_all(render_text(ROOT / "manifests/overlays/dev"))
    assert unawaited_workloads(docs, _verify_workloads()) == []
    assert "Deployment/gateway=forkcast-gateway" in _verify_workloads()
    # Twin: a new Deployment on the gateway image that the list forgets is reported by name.
    gateway = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "gateway")
    extra = copy.deepcopy(gateway)
    extra["metadata"]["name"] = "gateway-admin"
    assert unawaited_workloads([*docs, extra], _verify_workloads()) == [
        "Deployment/gateway-admin=forkcast-gateway"
    ]


def test_code_on_the_default_branch_ships_images_by_digest_and_a_manifest_merge_does_not() -> None:
    code = jobs_for({**MAIN, "__changed__": "services/inference/src/forkcast_inference/api.py"})
    assert {"release-images", "verify-dev-images", "propose-prod-images"} <= code
    manifests_only = jobs_for({**MAIN, "__changed__": "manifests/overlays/prod/model-release.yaml"})
    assert not manifests_only & {"release-images", "verify-dev-images", "propose-prod-images"}
    build = resolved("build")
    images = {entry["IMAGE"] for entry in build["parallel"]["matrix"]}
    assert images == {"gateway", "inference", "retrain", "monitoring", "lake"}
    assert any('--digest-file "$CI_PROJECT_DIR/images/$IMAGE.digest"' in line for line in build["script"])
    assert build["artifacts"]["paths"] == ["images/"]


# TRAIN_EXECUTOR (issue 10): the heavy steps run either in CI jobs or on the cluster, never both, never neither.
@pytest.mark.parametrize("source", ["schedule", "trigger"])
@pytest.mark.parametrize("executor", [None, "ci", "argo", "Argo"])
def test_train_executor_selects_exactly_one_training_path(source: str, executor: str | None) -> None:
    variables = {"CI_PIPELINE_SOURCE": source, **({"TRAIN_EXECUTOR": executor} if executor else {})}
    jobs = jobs_for(variables)
    in_ci = executor in (None, "ci")  # unset: the file's default, ci
    assert jobs & (TRAIN_IN_CI | TRAIN_ON_CLUSTER) == (TRAIN_IN_CI if in_ci else TRAIN_ON_CLUSTER), jobs
    assert {"gate", "publish", "promote-dev", "promote-prod"} <= jobs
    # gate's needs: each one that is not in this pipeline is optional, and one that ran hands it the run directory.
    present = {n for n in needs("gate") if n in jobs}
    assert all(optional for n, optional in needs("gate").items() if n not in jobs), needs("gate")
    assert present == ({"evaluate"} if in_ci else TRAIN_ON_CLUSTER)
    for job in present:
        assert resolved(job)["artifacts"]["paths"] == ["$RUN_DIR/"]


@pytest.mark.parametrize("source", ["push", "merge_request_event"])
def test_a_change_pipeline_trains_nowhere_whatever_the_executor(source: str) -> None:
    for executor in ("ci", "argo"):
        jobs = jobs_for({"CI_PIPELINE_SOURCE": source, "TRAIN_EXECUTOR": executor})
        assert not jobs & (TRAIN_IN_CI | TRAIN_ON_CLUSTER | {"gate"}), jobs


def test_both_paths_start_by_recording_the_trigger() -> None:
    assert resolved("prep")["before_script"] == resolved("train-on-cluster")["before_script"]


def _cluster_script() -> list[str]:
    job = resolved("train-on-cluster")
    return [*job["before_script"], *job["script"]]


def test_the_cluster_job_submits_the_candidate_dag_waits_and_fetches_the_run() -> None:
    (call,) = [c for c in _cluster_script() if "forkcast_retrain.workflow" in c]
    # ${VAR:+...} expands to nothing when VAR is unset: parse the call both ways.
    for optional in ("", r"\1"):
        line = re.sub(r"\$\{\w+:\+(.*?)\}", optional, call.replace("\n", " "))
        line = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", line)
        words = shlex.split(re.sub(r"\$\{?\w+\}?", "x", line))
        assert words[:3] == ["python", "-m", "forkcast_retrain.workflow"]
        args = workflow.build_parser().parse_args(words[3:])
        assert args.command == "submit" and args.entrypoint == workflow.CANDIDATE_ENTRYPOINT
        assert args.wait and args.fetch_run is not None and args.bucket
        assert {"image", "recipe", "dataset", "dataset_version", "train_nodes"} == dict(args.param).keys()
    assert '--fetch-run "$RUN_DIR"' in call and f"--param image={committed_retrain_image()}" in call
    # The image those jobs run has the kubernetes client the submit needs.
    assert "--extra workflows" in (ROOT / "pipelines/retrain/Dockerfile").read_text()


def _run_cluster_job(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The job's shell lines as the runner runs them (bash, stop at the first failure), on this machine."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    base = {"PATH": path, "HOME": str(tmp_path), "RUN_DIR": "run", "CI_PIPELINE_SOURCE": "schedule"}
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", "\n".join(_cluster_script())],
        cwd=tmp_path,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TRAIN_EXECUTOR": "Argo"}, "TRAIN_EXECUTOR=Argo: expected ci (train in CI jobs) or argo"),
        ({"TRAIN_EXECUTOR": "argo", "ARGO_ARTIFACT_BUCKET": "b"}, "set ARGO_NAMESPACE"),
        ({"TRAIN_EXECUTOR": "argo", "ARGO_NAMESPACE": "ml"}, "set ARGO_ARTIFACT_BUCKET"),
        # Everything set but credentials for the Kubernetes API (no KUBECONFIG file, not in a pod).
        (
            {
                "TRAIN_EXECUTOR": "argo",
                "ARGO_NAMESPACE": "ml",
                "ARGO_ARTIFACT_BUCKET": "b",
                "KUBECONFIG": "absent",
            },
            "not submitted: no Kubernetes credentials",
        ),
    ],
    ids=["typo", "namespace", "bucket", "credentials"],
)
def test_the_cluster_job_stops_before_submitting_when_something_is_missing(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    result = _run_cluster_job(tmp_path, env)
    assert result.returncode != 0
    assert message in result.stderr, result.stdout + result.stderr
    assert "submitted workflow" not in result.stdout


def unprotected_tags(images: list[str], settings: str) -> list[str]:
    """The tags of ``images`` that no `Protected container tags` rule named in ``settings`` (docs/operations.md,
    "GitLab project settings") matches: by default any Developer may push them (GitLab docs, "Protected container
    tags")."""
    rules = re.findall(r"\*\*Protected container tags\*\*: a rule for `([^`]+)`", settings)
    return [image for image in images if not any(re.fullmatch(r, image.rsplit(":", 1)[1]) for r in rules)]


def test_the_tag_the_secret_holding_jobs_run_is_protected() -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    settings = text.split("**GitLab project settings the release path needs.**", 1)[1].split("\n## ", 1)[0]
    assert unprotected_tags([RETRAIN_IMAGE], settings) == []
    # Twin: without the rule (what the settings said before), the tag is named.
    without = re.sub(r"- Settings > Packages and registries.*?(?=\n- )", "", settings, flags=re.DOTALL)
    assert unprotected_tags([RETRAIN_IMAGE], without) == [RETRAIN_IMAGE]


def _secret_holding_jobs(jobs: dict[str, Any]) -> list[str]:
    """Jobs that run forkcast-retrain or clone with GITOPS_TOKEN (the GitOps / S3 / MLflow secrets)."""
    names = []
    for name, raw in jobs.items():
        if name.startswith(".") or name in ("workflow", "variables", "stages") or not isinstance(raw, dict):
            continue
        lines = [str(x) for x in _flat(resolve(jobs, name).get("before_script", []))] + [
            str(x) for x in resolve(jobs, name).get("script", [])
        ]
        if any("forkcast-retrain" in s or "GITOPS_TOKEN" in s or "forkcast_retrain" in s for s in lines):
            names.append(name)
    return names


def test_the_secret_holding_jobs_and_the_argo_submission_run_one_literal_retrain_reference() -> None:
    """Every job holding the secrets, and the image train-on-cluster hands the Workflow, is the one literal
    reference set-images --ci-file rewrites; committed it is the bootstrap tag or a digest, never anything else."""
    text = (ROOT / ".gitlab-ci.yml").read_text()
    ref = committed_retrain_image()
    assert ref == RETRAIN_IMAGE or re.fullmatch(
        rf"{re.escape(RETRAIN_REPOSITORY)}@sha256:[0-9a-f]{{64}}", ref
    )
    assert len(ci_image_refs(text)) == 2  # .retrain-image and train-on-cluster's --param image=
    jobs = _secret_holding_jobs(pipeline())
    assert {
        "prep",
        "gate",
        "publish",
        "promote-dev",
        "release-images",
        "rollback",
        "train-on-cluster",
    } <= set(jobs)
    assert {j: resolved(j)["image"]["name"] for j in jobs} == dict.fromkeys(jobs, ref)
    assert f"--param image={ref} " in " ".join(_cluster_script())


def _release_repo(tmp_path: Path) -> Path:
    """A GitOps clone as release-images sees it: the dev overlay and this .gitlab-ci.yml, committed."""
    repo = tmp_path / "gitops"
    shutil.copytree(ROOT / "manifests" / "overlays" / "dev", repo / "manifests" / "overlays" / "dev")
    shutil.copy(ROOT / ".gitlab-ci.yml", repo / ".gitlab-ci.yml")
    (repo / "workflows").mkdir()
    shutil.copy(ROOT / TEMPLATE, repo / TEMPLATE)
    for args in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-qm", "seed"]):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True)
    return repo


def _run_release_images(repo: Path, digests: Path) -> int:
    """release-images' own set-images call from .gitlab-ci.yml, with its variables set, without the push."""
    (argv,) = [c for c in _retrain_calls() if c[0] == "set-images" and "--target-branch" in c]
    given = {"$GITOPS_DIR": str(repo), "$CI_DEFAULT_BRANCH": "main", "images": str(digests)}
    return retrain_main([*(given.get(w, w) for w in argv), "--no-push"])


def test_release_images_pins_the_retrain_image_the_ci_file_runs(tmp_path: Path) -> None:
    """Before, release-images pinned only the overlay: the CI file kept running retrain:main, a tag whoever may
    push it chooses. Now the digest the build recorded lands in .retrain-image and in the Argo submission, in the
    release commit itself, and the next release replaces it."""
    repo = _release_repo(tmp_path)
    digests = tmp_path / "images"
    digests.mkdir()
    for image in ("gateway", "inference", "monitoring", "lake", "retrain"):
        (digests / f"{image}.digest").write_text(("sha256:" + image[:1].encode().hex() * 32) + "\n")
    (digests / "retrain.digest").write_text(BUILT + "\n")
    assert _run_release_images(repo, digests) == 0
    text = (repo / ".gitlab-ci.yml").read_text()
    pinned = f"{RETRAIN_REPOSITORY}@{BUILT}"
    assert ci_image_refs(text) == [pinned, pinned]
    _header, body = yaml.load_all(text, Loader=_GitLabLoader)
    assert body[".retrain-image"]["image"]["name"] == pinned
    assert f"--param image={pinned} " in body["train-on-cluster"]["script"][-1]
    committed = subprocess.run(
        ["git", "show", "--name-only", "--format=%s", "HEAD"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert ".gitlab-ci.yml" in committed and "manifests/overlays/dev/kustomization.yaml" in committed
    # Review 59, L7: the WorkflowTemplate's default image was left at :main, so a Workflow submitted without an
    # image ran whatever that tag held with the retrain S3 credentials. Now the same commit pins it.
    assert TEMPLATE in committed
    assert _template_default_image(repo / TEMPLATE) == pinned
    # The next release moves the pin; nothing else in the file changes.
    (digests / "retrain.digest").write_text(f"sha256:{'77' * 32}\n")
    assert _run_release_images(repo, digests) == 0
    after = (repo / ".gitlab-ci.yml").read_text()
    assert ci_image_refs(after) == [f"{RETRAIN_REPOSITORY}@sha256:{'77' * 32}"] * 2
    assert after.replace("77" * 32, "5e" * 32) == text
    assert _template_default_image(repo / TEMPLATE) == f"{RETRAIN_REPOSITORY}@sha256:{'77' * 32}"


def _template_default_image(path: Path) -> str:
    (param,) = [
        p for p in yaml.safe_load(path.read_text())["spec"]["arguments"]["parameters"] if p["name"] == "image"
    ]
    return str(param["value"])


def test_release_images_refuses_a_template_that_runs_another_repository(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Twin of L7: a template whose image names another repository than the CI file (a fork moved one literal,
    not the other) would be pinned to a digest that repository never received; the job fails naming both, and
    writes nothing (neither the overlay, the CI file nor the template)."""
    repo = _release_repo(tmp_path)
    template = repo / TEMPLATE
    template.write_text(template.read_text().replace(RETRAIN_REPOSITORY, "registry.example.com/fork/retrain"))
    digests = tmp_path / "images"
    digests.mkdir()
    (digests / "inference.digest").write_text(BUILT + "\n")
    (digests / "retrain.digest").write_text(BUILT + "\n")
    files = (".gitlab-ci.yml", TEMPLATE, "manifests/overlays/dev/kustomization.yaml")
    before = {p: (repo / p).read_text() for p in files}
    assert _run_release_images(repo, digests) == 2
    assert (
        f"the files run retrain from different repositories (.gitlab-ci.yml from {RETRAIN_REPOSITORY}, "
        f"{TEMPLATE} from registry.example.com/fork/retrain)"
    ) in capsys.readouterr().err
    assert {p: (repo / p).read_text() for p in before} == before


def test_a_ci_file_without_the_literal_retrain_reference_is_refused(tmp_path: Path) -> None:
    """Twin: a CI file that names the image through a variable again (what the pipeline had before issue 18.3)
    has nothing to pin: the release job fails and says so instead of committing an unpinned file."""
    repo = _release_repo(tmp_path)
    ci = repo / ".gitlab-ci.yml"
    ci.write_text(ci.read_text().replace(RETRAIN_IMAGE, "$RETRAIN_IMAGE"))
    digests = tmp_path / "images"
    digests.mkdir()
    (digests / "inference.digest").write_text(BUILT + "\n")
    (digests / "retrain.digest").write_text(BUILT + "\n")
    with pytest.raises(DataError, match=r"names no <repository>/retrain:main or <repository>/retrain@sha256"):
        pin_ci_image(ci.read_text(), BUILT)
    assert _run_release_images(repo, digests) == 2
    assert "$RETRAIN_IMAGE" in ci.read_text()


# --- the build's layer cache (review 59, M1) ------------------------------------------------------------------------

# The kaniko build line as it was: --cache=true and no --cache-repo on every ref, so main read the cache branches wrote.
_OLD_KANIKO = (
    '/kaniko/executor --context "$CI_PROJECT_DIR" --dockerfile "$CI_PROJECT_DIR/$DOCKERFILE" '
    '--destination "$CI_REGISTRY_IMAGE/$IMAGE:$IMAGE_TAG" '
    '--destination "$CI_REGISTRY_IMAGE/$IMAGE:$CI_COMMIT_REF_SLUG" '
    '--digest-file "$CI_PROJECT_DIR/images/$IMAGE.digest" --cache=true --reproducible'
)


def _kaniko_args(tmp_path: Path, script: list[str], ref: dict[str, str]) -> list[str]:
    """The arguments the build job's script hands /kaniko/executor on this ref: its shell lines run by bash (as the
    runner does) with /kaniko pointed at a stub that records its argv and writes the digest file."""
    kaniko = tmp_path / "kaniko"
    kaniko.mkdir(exist_ok=True)
    (kaniko / "executor").write_text(
        '#!/bin/sh\nprintf "%s\\n" "$@" > "$KANIKO_ARGV"\n'
        'while [ $# -gt 0 ]; do [ "$1" = --digest-file ] && echo sha256:00 > "$2"; shift; done\n'
    )
    (kaniko / "executor").chmod(0o755)
    argv = tmp_path / "argv"
    env = {
        "PATH": os.environ["PATH"],
        "KANIKO_ARGV": str(argv),
        "CI_PROJECT_DIR": str(tmp_path / "project"),
        "CI_REGISTRY": "registry.gitlab.com",
        "CI_REGISTRY_IMAGE": "registry.gitlab.com/forkcast/forkcast",
        "CI_REGISTRY_USER": "gitlab-ci-token",
        "CI_REGISTRY_PASSWORD": "job-token",
        "CI_DEFAULT_BRANCH": "main",
        "IMAGE": "retrain",
        "DOCKERFILE": "pipelines/retrain/Dockerfile",
        "IMAGE_TAG": "0123abcd",
        **ref,
    }
    lines = [line.replace("/kaniko/", f"{kaniko}/") for line in script]
    subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", "\n".join(lines)], env=env, check=True, capture_output=True
    )
    return argv.read_text().splitlines()


def kaniko_cache_repo(args: list[str]) -> str | None:
    """The repository kaniko reads cached layers from (and writes them to) with these arguments, or None when the
    cache is off: --cache-repo, else inferred as <first --destination's repository>/cache (kaniko README,
    "--cache-repo"); the flag's default is false (cmd/executor/cmd/root.go)."""
    flags = dict(a.split("=", 1) for a in args if a.startswith("--") and "=" in a)
    if flags.get("--cache", "false") != "true":
        return None
    if "--cache-repo" in args:
        return args[args.index("--cache-repo") + 1]
    destination = args[args.index("--destination") + 1]
    return f"{destination.rsplit(':', 1)[0]}/cache"


MAIN_PUSH = {"CI_COMMIT_REF_PROTECTED": "true", "CI_COMMIT_BRANCH": "main", "CI_COMMIT_REF_SLUG": "main"}
BRANCH_PUSH = {
    "CI_COMMIT_REF_PROTECTED": "false",
    "CI_COMMIT_BRANCH": "feature",
    "CI_COMMIT_REF_SLUG": "feature",
}
MR_PIPELINE = {"CI_COMMIT_REF_PROTECTED": "false", "CI_COMMIT_REF_SLUG": "feature"}


def test_a_default_branch_build_reads_no_layer_cache_a_branch_pipeline_writes(tmp_path: Path) -> None:
    """M1: the default branch's build (what release-images pins into the jobs holding GITOPS_TOKEN and the S3
    credentials) reads no cached layer; branch and merge request pipelines still cache, into a repository the
    default branch never reads. The same holds when GitLab reports the default branch unprotected, and for a tag."""
    script = [str(x) for x in resolved("build")["script"]]
    branch_writes = kaniko_cache_repo(_kaniko_args(tmp_path, script, BRANCH_PUSH))
    assert branch_writes == "registry.gitlab.com/forkcast/forkcast/retrain/cache"
    assert kaniko_cache_repo(_kaniko_args(tmp_path, script, MR_PIPELINE)) == branch_writes
    for ref in (
        MAIN_PUSH,
        {**MAIN_PUSH, "CI_COMMIT_REF_PROTECTED": "false"},
        {"CI_COMMIT_REF_PROTECTED": "true", "CI_COMMIT_TAG": "v1.0.0", "CI_COMMIT_REF_SLUG": "v1-0-0"},
        {"CI_COMMIT_BRANCH": "main", "CI_COMMIT_REF_SLUG": "main"},  # protection unknown: no cache
    ):
        assert kaniko_cache_repo(_kaniko_args(tmp_path, script, ref)) is None, ref


def test_twin_the_old_build_line_let_main_read_the_branch_cache(tmp_path: Path) -> None:
    """The build as it was: main's build read exactly the repository a branch pipeline's job token wrote."""
    main_reads = kaniko_cache_repo(_kaniko_args(tmp_path, [_OLD_KANIKO], MAIN_PUSH))
    assert main_reads == kaniko_cache_repo(_kaniko_args(tmp_path, [_OLD_KANIKO], BRANCH_PUSH))
    assert main_reads == "registry.gitlab.com/forkcast/forkcast/retrain/cache"
