"""The retraining path of `.gitlab-ci.yml` run for real by gitlab-ci-local 4.73.0 (issue 10 §6).

Shell executor (`--force-shell-executor --shell-isolation`): the jobs run on this machine with the workspace's
virtual environment first on PATH instead of in the retrain image, each in a checkout of its own. A real SeaweedFS
(the lake and the registry) and a real MLflow server (sqlite, artifacts on the same S3), both on loopback ports and
stopped by PID. The training data is a very small dataset published to the lake (`forkcast-data publish`) and named
by the pipeline's `dataset` input only: no FORKCAST_DATA_DIR, no directory of this machine; every job that reads the
data fetches the snapshot from S3 itself. gitlab-ci-local gives every job with an `image:` the one CI_PROJECT_DIR
/builds/<group>/<project> under the shell executor (where GitLab gives each a fresh container), so the test points
FORKCAST_DATASET_CACHE at a folder per job (GitLab expands $CI_JOB_NAME in a variable's value) and checks that each
of them holds the snapshot: no job read another's download.

What never runs here, and how it is kept out without editing the pipeline file: the push pipeline is only listed
(`--list`, rules evaluated) because its build job needs kaniko and its lint/test jobs the python image; the retrain
pipelines contain no image-only job (their rules select prep > ... > promote). Promote writes to a scratch bare
repository, never to this repository: the pipeline clones the literal https://gitlab.com/forkcast/forkcast.git
(no URL variable a pipeline could redirect), so the test rewrites that URL for git itself (`url.<base>.insteadOf`
through GIT_CONFIG_COUNT/KEY/VALUE, git's own environment configuration).

The pipeline runs in a scratch Git project holding only `.gitlab-ci.yml` (gitlab-ci-local writes its state next to
the file it reads), with `--home` pointing at a scratch directory so no user-level variables leak in.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from forkcast_devservers.servers import Mlflow, Seaweed

# Minutes long: `make test` starts such files first (forkcast_devservers.pytest_kinds.longest_first).
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
GCL = ["npx", "--yes", "gitlab-ci-local@4.73.0"]
# What a machine without npx is told (the test fails with it, never skips: `make system-packages` installs Node.js).
NPX_HINT = (
    "npx not found on PATH: gitlab-ci-local@4.73.0 runs through npx (Node.js with npm). Run `make system-packages` "
    "(as root it apt-get installs Debian's nodejs and npm when no npx is present), or install Node.js 20 with npm "
    "from https://nodejs.org"
)
RETRAIN_JOBS = {
    "prep",
    "train",
    "evaluate",
    "gate",
    "publish",
    "promote-dev",
    "verify-dev-model",
    "promote-prod",
}
RELEASE = "manifests/overlays/dev/model-release.yaml"
# One gitlab-ci-local run of the whole retraining pipeline: eight jobs, each a Python process that imports torch,
# MLflow and delta-rs, five of them fetching the dataset from S3.
PIPELINE_TIMEOUT_S = 480
LAKE_BUCKET = "forkcast-lake"
DATASET_URI = f"s3://{LAKE_BUCKET}/datasets/ci"
# The jobs that read the dataset (prep resolves the snapshot; train, evaluate and gate read click files; publish
# reads dataset.json): each fetches the snapshot from S3 into its own cache.
DATA_JOBS = ("prep", "train", "evaluate", "gate", "publish")
GITOPS_URL = "https://gitlab.com/forkcast/forkcast.git"


def _git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.fixture(scope="module")
def gcl() -> list[str]:
    """The gitlab-ci-local command, fetched once through npx from the npm registry. A missing node/npx or a failed
    fetch fails the test with what to install: the pipeline is never silently left unrun."""
    if shutil.which("npx") is None:
        pytest.fail(NPX_HINT)
    try:
        probe = subprocess.run([*GCL, "--version"], capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired:
        pytest.fail("npx could not fetch gitlab-ci-local@4.73.0 from the npm registry within 240 s")
    if probe.returncode != 0 or "4.73.0" not in probe.stdout:
        pytest.fail(f"npx could not fetch gitlab-ci-local@4.73.0: {probe.stderr.strip()[-300:]}")
    return GCL


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """SeaweedFS + MLflow on free loopback ports (forkcast_devservers); the CI/CD variables the retrain jobs need."""
    root = tmp_path_factory.mktemp("ci-stack")
    # Both buckets are infrastructure (created once by the platform), not something a pipeline creates.
    with Seaweed(root / "seaweed") as seaweed, Mlflow.on(seaweed, root / "mlflow") as mlflow:
        seaweed.create_bucket("forkcast-models")
        seaweed.create_bucket(LAKE_BUCKET)
        yield {
            **seaweed.client_env("forkcast-models"),
            "FORKCAST_MODEL_CACHE": str(root / "cache"),
            "MLFLOW_TRACKING_URI": mlflow.url,
            "MLFLOW_S3_ENDPOINT_URL": seaweed.endpoint,
        }


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, stack: dict[str, str]) -> tuple[str, str]:
    """A very small dataset (12 k training rows: the pipeline's speed, not the model's quality, is tested),
    published to the lake with the CLI an operator uses; (its s3:// URI, its fingerprint). The local folder is
    deleted once published: nothing can read it."""
    out = tmp_path_factory.mktemp("ci-data") / "data"
    subprocess.run(
        [
            *(str(VENV_BIN / "forkcast-data"), "generate", "--out", str(out), "--no-progress"),
            *("--users", "500", "--restaurants", "1200", "--train-files", "3", "--test-files", "1"),
            *("--rows-per-file", "4000", "--requests", "5"),
        ],
        check=True,
        capture_output=True,
    )
    fingerprint = json.loads((out / "dataset.json").read_text())["fingerprint"]
    published = subprocess.run(
        [str(VENV_BIN / "forkcast-data"), "publish", str(out), "--to", DATASET_URI],
        env={**os.environ, **stack},
        capture_output=True,
        text=True,
        check=False,
    )
    assert published.returncode == 0, published.stdout + published.stderr
    shutil.rmtree(out)
    return DATASET_URI, fingerprint


@pytest.fixture(scope="module")
def gitops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch bare repository holding a copy of this repository's manifests on `main` (promote's target)."""
    root = tmp_path_factory.mktemp("gitops")
    bare = root / "gitops.git"
    _git(root, "init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    # promote-prod pushes with `-o merge_request.create`; a plain Git server must accept push options.
    _git(bare, "config", "receive.advertisePushOptions", "true")
    work = root / "seed"
    _git(root, "init", "--quiet", "--initial-branch=main", str(work))
    for tree in ("manifests", "rollouts"):
        shutil.copytree(ROOT / tree, work / tree)
    _git(work, "add", ".")
    _git(work, "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "--quiet", "-m", "seed")
    _git(work, "push", "--quiet", str(bare), "main")
    return bare


class ArgoCDStandIn:
    """A local HTTP server answering the Argo CD API calls of `wait-rollout` as Argo CD would once it synced the
    scratch GitOps repository: the live Rollout carries the model version the dev release file on `main` names, at
    100 %. Records every request so the test sees that verify-dev-model asked (and with a header token)."""

    def __init__(self, bare: Path) -> None:
        self.calls: list[tuple[str, str | None]] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stand_in.calls.append((self.path, self.headers.get("Authorization")))
                release = yaml.safe_load(_git(bare, "show", f"main:{RELEASE}"))
                version = release["data"]["FORKCAST_MODEL_VERSION"]
                rollout = {
                    "metadata": {"generation": 2},
                    "spec": {"replicas": 1, "template": {"metadata": {"annotations": {
                        "forkcast.io/model-version": version}}, "spec": {"containers": []}}},
                    "status": {"observedGeneration": "2", "updatedReplicas": 1, "availableReplicas": 1,
                               "stableRS": "h", "currentPodHash": "h"},
                }  # fmt: skip
                body = json.dumps({"manifest": json.dumps(rollout)}).encode()
                self.send_response(200)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def argocd(gitops: Path) -> Iterator[ArgoCDStandIn]:
    stand_in = ArgoCDStandIn(gitops)
    yield stand_in
    stand_in.server.shutdown()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch Git project holding this repository's `.gitlab-ci.yml`, so gitlab-ci-local writes nothing here."""
    project = tmp_path_factory.mktemp("project")
    shutil.copy(ROOT / ".gitlab-ci.yml", project / ".gitlab-ci.yml")
    _git(project, "init", "--quiet", "--initial-branch=main")
    _git(project, "remote", "add", "origin", "https://gitlab.example.invalid/forkcast/forkcast.git")
    _git(project, "add", ".gitlab-ci.yml")
    _git(project, "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "--quiet", "-m", "ci")
    # `rules: changes` are evaluated against origin/<default branch> (git diff): the remote's ref, at this commit.
    _git(project, "update-ref", "refs/remotes/origin/main", "HEAD")
    return project


def _run(
    gcl: list[str],
    project: Path,
    variables: dict[str, str],
    *extra: str,
    inputs: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    home = project.parent / f"{project.name}-home"
    home.mkdir(exist_ok=True)
    # CI_PIPELINE_SOURCE and CI_DEFAULT_BRANCH are predefined: setting them is what this test means to do.
    cmd = [
        *gcl,
        "--home",
        str(home),
        "--no-color",
        "--ignore-predefined-vars",
        "CI_PIPELINE_SOURCE,CI_DEFAULT_BRANCH",
    ]
    cmd += ["--force-shell-executor", "--shell-isolation"]
    for key, value in variables.items():
        cmd += ["--variable", f"{key}={value}"]
    # spec:inputs of the file's header, checked against its options/regex as GitLab checks them at creation.
    for key, value in (inputs or {}).items():
        cmd += ["--input", f"{key}={value}"]
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    # gitlab-ci-local takes only a relative --cwd: run it in the project instead.
    return subprocess.run(
        [*cmd, *extra],
        cwd=project,
        capture_output=True,
        text=True,
        env=env,
        timeout=PIPELINE_TIMEOUT_S,
        check=False,
    )


def _listed(result: subprocess.CompletedProcess[str]) -> set[str]:
    """Job names in `--list-json` output whose rules select them for this pipeline (not `when: never`)."""
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("["))
    listing = json.loads("\n".join(lines[start:]))
    return {job["name"] for job in listing if job["when"] != "never"}


def test_push_runs_lint_test_build_and_no_retraining(gcl: list[str], project: Path) -> None:
    jobs = _listed(_run(gcl, project, {"CI_PIPELINE_SOURCE": "push"}, "--list-json"))
    assert {"lint", "test"} <= jobs and any(j.startswith("build") for j in jobs), jobs
    assert not jobs & RETRAIN_JOBS, jobs


@pytest.mark.parametrize("source", ["schedule", "trigger"])
def test_train_executor_argo_trains_on_the_cluster_instead(
    gcl: list[str], project: Path, source: str
) -> None:
    """Only listed (the job needs a cluster): GitLab's rules, as gitlab-ci-local evaluates them, pick the path."""
    variables = {"CI_PIPELINE_SOURCE": source, "TRAIN_EXECUTOR": "argo"}
    jobs = _listed(_run(gcl, project, variables, "--list-json"))
    assert jobs == RETRAIN_JOBS - {"prep", "train", "evaluate"} | {"train-on-cluster"}, jobs


def _pipeline(
    gcl: list[str],
    project: Path,
    stack: dict[str, str],
    data: tuple[str, str],
    gitops: Path,
    extra: dict[str, str],
    argocd: ArgoCDStandIn | None = None,
    inputs: dict[str, str] | None = None,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    variables = {
        **stack,
        **extra,
        **({"FORKCAST_ARGOCD_SERVER": argocd.url, "FORKCAST_ARGOCD_TOKEN": "t0ken"} if argocd else {}),
        "FORKCAST_DATASET_CACHE": f"{project.parent / 'dataset-caches'}/$CI_JOB_NAME",
        "GITOPS_TOKEN": "unused-by-a-file-remote",
        # The literal clone URL of `.gitops`, answered by the scratch bare repository.
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": f"url.file://{gitops}.insteadOf",
        "GIT_CONFIG_VALUE_0": GITOPS_URL,
        "CI_DEFAULT_BRANCH": "main",
    }
    shutil.rmtree(project / ".gitlab-ci-local", ignore_errors=True)
    shutil.rmtree(project.parent / "dataset-caches", ignore_errors=True)
    result = _run(gcl, project, variables, inputs={"dataset": data[0], **(inputs or {})})
    return result, project / ".gitlab-ci-local"


def _ran(state: Path) -> set[str]:
    """Jobs that gitlab-ci-local executed, from its per-job output logs."""
    return {p.stem for p in (state / "output").glob("*.log")}


def _release_changes(gitops: Path) -> list[str]:
    return _git(gitops, "log", "--format=%s", "main", "--", RELEASE).splitlines()


@pytest.mark.parametrize(
    ("source", "alert"),
    [
        ("schedule", {}),
        (
            "trigger",
            {"alert_name": "OnlineAucLow", "alert_reason": "online AUC 0.61 below 0.70 for 30m"},
        ),
    ],
)
def test_retraining_pipeline_promotes_into_the_gitops_repo(
    gcl: list[str],
    project: Path,
    stack: dict[str, str],
    data: tuple[str, str],
    gitops: Path,
    argocd: ArgoCDStandIn,
    source: str,
    alert: dict[str, str],
) -> None:
    before = _release_changes(gitops)
    argocd.calls.clear()
    extra = {"CI_PIPELINE_SOURCE": source}
    result, state = _pipeline(gcl, project, stack, data, gitops, extra, argocd, inputs=alert)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert _ran(state) == RETRAIN_JOBS, result.stdout[-3000:]
    trigger = json.loads(next(state.glob("artifacts/prep/**/trigger.json")).read_text())
    assert trigger["CI_PIPELINE_SOURCE"] == source
    assert trigger["alert_name"] == alert.get("alert_name", "none")
    assert trigger["alert_reason"] == alert.get("alert_reason", "")
    # The data came from the lake URI alone: prep recorded the snapshot it resolved (the newest: version 0), and
    # every job that reads rows fetched that snapshot from S3 into its own cache.
    uri, fingerprint = data
    prep = json.loads(next(state.glob("artifacts/prep/**/prep/prep.json")).read_text())
    assert prep["data_snapshot"]["uri"] == uri and prep["data_snapshot"]["version"] == 0
    assert prep["data_snapshot"]["fingerprint"] == fingerprint
    caches = project.parent / "dataset-caches"
    fetched = {p.parent.parent.name for p in caches.glob(f"*/{fingerprint}/dataset.json")}
    assert fetched == set(DATA_JOBS), sorted(fetched)
    # The release names the snapshot: the gate report publish carried into the version.
    gate = json.loads(next(state.glob("artifacts/gate/**/gate_report.json")).read_text())
    assert {k: gate["dataset"][k] for k in ("uri", "version", "fingerprint")} == {
        "uri": uri,
        "version": 0,
        "fingerprint": fingerprint,
    }
    # promote-dev committed to main: one more commit on the dev release file, now naming the published version.
    assert len(_release_changes(gitops)) == len(before) + 1
    published = json.loads(next(state.glob("artifacts/publish/**/published.json")).read_text())
    release = yaml.safe_load(_git(gitops, "show", f"main:{RELEASE}"))
    assert published["version"] in json.dumps(release["data"])
    # verify-dev-model asked Argo CD (token in the header) before promote-prod pushed the merge request branch,
    # instead of touching main's prod overlay.
    assert any(path.endswith("/resource?" + path.split("?")[1]) for path, _ in argocd.calls), argocd.calls
    assert {auth for _, auth in argocd.calls} == {"Bearer t0ken"}
    assert f"release/prod-{published['version']}" in _git(gitops, "branch", "--list", "release/*")
    # Proposing prod moved no alias: champion waits for the merge (sync-champion on the default branch).
    client = MlflowClient(
        tracking_uri=stack["MLFLOW_TRACKING_URI"], registry_uri=stack["MLFLOW_TRACKING_URI"]
    )
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias("forkcast-ranknet", "champion")


def test_a_trigger_without_its_alert_stops_at_prep(
    gcl: list[str], project: Path, stack: dict[str, str], data: tuple[str, str], gitops: Path
) -> None:
    """The old interface (variables) names no alert: the inputs stay at `none` and prep refuses the trigger."""
    before = _release_changes(gitops)
    extra = {"CI_PIPELINE_SOURCE": "trigger", "ALERT_NAME": "OnlineAucLow", "ALERT_REASON": "x"}
    result, state = _pipeline(gcl, project, stack, data, gitops, extra)
    assert result.returncode != 0
    assert "a triggered retraining needs inputs alert_name" in result.stdout + result.stderr
    assert _ran(state) == {"prep"}
    assert _release_changes(gitops) == before


@pytest.mark.parametrize(
    ("inputs", "refusal"),
    [
        (
            {"alert_name": "ModelTooOld", "alert_reason": "x"},
            "`alert_name` input: `ModelTooOld` cannot be used because it is not in the list of allowed options",
        ),
        (
            {"alert_name": "OnlineAucLow", "alert_reason": "AUC low $(touch pwned)"},
            "`alert_reason` input: `AUC low $(touch pwned)` does not match required regex",
        ),
    ],
    ids=["unrouted-alert", "shell-in-reason"],
)
def test_inputs_outside_the_spec_create_no_pipeline(
    gcl: list[str], project: Path, inputs: dict[str, str], refusal: str
) -> None:
    """gitlab-ci-local, like GitLab, refuses the configuration before any job runs (nothing under output/)."""
    shutil.rmtree(project / ".gitlab-ci-local", ignore_errors=True)
    result = _run(gcl, project, {"CI_PIPELINE_SOURCE": "trigger"}, inputs=inputs)
    assert result.returncode != 0
    assert refusal in result.stdout + result.stderr, result.stdout[-2000:] + result.stderr[-2000:]
    assert _ran(project / ".gitlab-ci-local") == set()
    assert not (project / "pwned").exists()
