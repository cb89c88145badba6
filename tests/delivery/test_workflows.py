"""The Argo retraining workflow (issue 10 §7): generated from the same steps as the GitLab jobs, committed as
generated, valid against the upstream CRD schemas, and shaped as the cluster needs it (DAG order, S3 artifacts,
retries on errors only, resource requests, GPU optional).
"""

from __future__ import annotations

import http.server
import itertools
import json
import shlex
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from forkcast_retrain.steps import DATA, RECIPE, RUN, STEPS, step
from forkcast_retrain.workflow import (
    CANDIDATE_ENTRYPOINT,
    CANDIDATE_STEPS,
    ENTRYPOINT,
    TEMPLATE_NAME,
    cron_workflow,
    main,
    rendered_files,
    run_key,
    submit,
    workflow,
    workflow_template,
)

ROOT = Path(__file__).resolve().parents[2]
SHARED_VALIDATOR = ROOT.parent / "shared" / "tools" / "validate-manifests"
CI_VALUES = {RUN: "$RUN_DIR", DATA: "$FORKCAST_DATA_DIR", RECIPE: "${RECIPE:-default}"}


def _ci_jobs() -> dict[str, Any]:
    loader = type("_L", (yaml.SafeLoader,), {})
    loader.add_constructor("!reference", lambda ld, node: ld.construct_sequence(node))
    jobs: dict[str, Any] = yaml.load((ROOT / ".gitlab-ci.yml").read_text(), Loader=loader)
    return jobs


def test_committed_files_are_exactly_what_the_generator_writes(tmp_path: Path) -> None:
    assert main(["render", str(tmp_path)]) == 0
    for name in rendered_files():
        committed = ROOT / "workflows" / name
        assert committed.is_file(), (
            f"{committed} missing: run python -m forkcast_retrain.workflow render workflows"
        )
        assert committed.read_bytes() == (tmp_path / name).read_bytes(), f"{name} is stale: regenerate it"


def test_workflows_pass_the_upstream_crd_schemas() -> None:
    if not SHARED_VALIDATOR.exists():
        pytest.skip(
            f"{SHARED_VALIDATOR} is absent (../shared beside the repository); the structural tests still run"
        )
    result = subprocess.run(
        [sys.executable, str(SHARED_VALIDATOR), "workflows/"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("s", STEPS, ids=[s.name for s in STEPS])
def test_the_gitlab_job_runs_the_same_call_as_the_workflow(s: Any) -> None:
    script = _ci_jobs()[s.name]["script"]
    calls = [shlex.split(line) for line in script if line.lstrip().startswith("forkcast-retrain")]
    assert calls == [["forkcast-retrain", *s.argv(CI_VALUES)]], (
        f"job {s.name} drifted from forkcast_retrain.steps"
    )


def test_the_dag_chains_the_steps_in_order_passing_the_run_directory() -> None:
    spec = workflow_template()["spec"]
    tasks = next(t for t in spec["templates"] if t["name"] == spec["entrypoint"])["dag"]["tasks"]
    assert [t["name"] for t in tasks] == [s.name for s in STEPS]
    for before, task in itertools.pairwise(tasks):
        assert task["dependencies"] == [before["name"]]
        assert task["arguments"]["artifacts"] == [
            {"name": "run", "from": f"{{{{tasks.{before['name']}.outputs.artifacts.run}}}}"}
        ]


def test_every_step_has_requests_retries_and_an_s3_run_artifact() -> None:
    templates = {t["name"]: t for t in workflow_template()["spec"]["templates"]}
    assert workflow_template()["spec"]["artifactRepositoryRef"]["key"]
    for s in STEPS:
        t = templates[s.name]
        assert t["container"]["args"][0] == s.name
        assert set(t["container"]["resources"]["requests"]) == {"cpu", "memory"}
        assert t["container"]["resources"]["limits"]["memory"] == s.resources.memory
        assert t["retryStrategy"]["retryPolicy"] == "OnError", "a failed gate must not be retried into a pass"
        assert int(t["retryStrategy"]["limit"]) >= 1
        (out,) = t["outputs"]["artifacts"]
        assert out["s3"]["key"].endswith(f"/{s.name}.tgz") and "{{workflow.name}}" in out["s3"]["key"]
        assert t["container"]["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_only_training_may_ask_for_a_gpu_and_by_default_it_does_not() -> None:
    spec = workflow_template()["spec"]
    params = {p["name"]: p["value"] for p in spec["arguments"]["parameters"]}
    assert params["gpus"] == "0"
    patched = {t["name"]: t["podSpecPatch"] for t in spec["templates"] if "podSpecPatch" in t}
    assert set(patched) == {"train"}
    limits = json.loads(patched["train"])["containers"][0]["resources"]["limits"]
    assert limits == {"nvidia.com/gpu": "{{workflow.parameters.gpus}}"}


def test_the_cron_workflow_runs_the_template_one_at_a_time() -> None:
    spec = cron_workflow()["spec"]
    assert (
        spec["workflowSpec"]["workflowTemplateRef"]["name"]
        == TEMPLATE_NAME
        == workflow_template()["metadata"]["name"]
    )
    assert spec["concurrencyPolicy"] == "Forbid" and spec["schedules"]


def test_a_step_without_a_value_for_its_placeholder_is_refused() -> None:
    with pytest.raises(KeyError, match="placeholder"):
        step("train").argv({RUN: "/run"})
    with pytest.raises(KeyError, match="steps: prep"):
        step("deploy")


class _Recorder(http.server.BaseHTTPRequestHandler):
    """A stand-in for the Kubernetes API server: records the request, answers what the API answers on create."""

    calls: ClassVar[list[tuple[str, str, dict[str, Any]]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls.append((self.command, self.path, body))
        answer = json.dumps(
            {**body, "metadata": {**body["metadata"], "name": "forkcast-retrain-x7k2p"}}
        ).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_submit_creates_a_workflow_from_the_template_through_the_kubernetes_api() -> None:
    kubernetes = pytest.importorskip("kubernetes", reason="the `workflows` extra of forkcast-retrain")
    server = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        conf = kubernetes.client.Configuration()
        conf.host = f"http://127.0.0.1:{server.server_address[1]}"
        name = submit(kubernetes.client.ApiClient(conf), "ml", {"gpus": "1", "recipe": "default"})
    finally:
        server.shutdown()
        thread.join(timeout=5)
    assert name == "forkcast-retrain-x7k2p"
    ((method, path, body),) = _Recorder.calls
    assert (method, path) == ("POST", "/apis/argoproj.io/v1alpha1/namespaces/ml/workflows")
    assert body["kind"] == "Workflow" and body["metadata"]["generateName"] == f"{TEMPLATE_NAME}-"
    assert body["spec"]["workflowTemplateRef"] == {"name": TEMPLATE_NAME}
    assert body["spec"]["arguments"]["parameters"] == [
        {"name": "gpus", "value": "1"},
        {"name": "recipe", "value": "default"},
    ]


def test_submit_refuses_a_parameter_the_template_does_not_have() -> None:
    with pytest.raises(ValueError, match="unknown workflow parameter"):
        workflow({"gpu": "1"})


def test_the_candidate_entrypoint_stops_before_the_gate_and_leaves_its_run_where_ci_fetches_it() -> None:
    """TRAIN_EXECUTOR=argo: the cluster runs prep > train > evaluate; the CI job reads `run_key(name, last)`."""
    spec = workflow_template()["spec"]
    dags = {t["name"]: t["dag"]["tasks"] for t in spec["templates"] if "dag" in t}
    assert set(dags) == {ENTRYPOINT, CANDIDATE_ENTRYPOINT} and spec["entrypoint"] == ENTRYPOINT
    names = [s.name for s in STEPS]
    assert [t["name"] for t in dags[CANDIDATE_ENTRYPOINT]] == names[: names.index("gate")]
    assert CANDIDATE_STEPS[-1].name == "evaluate"
    templates = {t["name"]: t for t in spec["templates"]}
    for s in STEPS:
        (out,) = templates[s.name]["outputs"]["artifacts"]
        assert out["s3"]["key"] == run_key("{{workflow.name}}", s.name)
    assert workflow({}, CANDIDATE_ENTRYPOINT)["spec"]["entrypoint"] == CANDIDATE_ENTRYPOINT
    with pytest.raises(ValueError, match="unknown entrypoint"):
        workflow({}, "gate")
