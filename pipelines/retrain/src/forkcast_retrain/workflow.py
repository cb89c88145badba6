"""Training on the cluster as an Argo WorkflowTemplate, generated from `forkcast_retrain.steps` (SPEC §7).

Why generated and not hand-written: the GitLab jobs and the cluster must run the same calls, so both derive from
one step list. Plain dicts emitted as YAML (no hera): the output is small, reviewed as a committed file under
workflows/, and regenerating must give the same bytes (a test checks it). The rest of workflows/ (ServiceAccount
and executor RBAC, settings, the artifact repository, the kustomization Argo CD syncs) is hand-written beside it.

Argo Workflows is only the executor, never a scheduler: GitLab's schedule and its alert trigger start every
retraining, and with TRAIN_EXECUTOR=argo the CI job `train-on-cluster` submits this template and waits for it
(`forkcast_retrain.cluster`). The template therefore runs only the heavy steps that make a candidate,
fetch-data > prep > train > evaluate, and leaves the run directory in S3 under `run_key`; the gate, publish and
promote stay in the pipeline, so nothing the cluster trains is ever published without being promoted through Git.

Where files live in a step's pod: the retrain image creates nothing outside its user's home (uid 10001,
pipelines/retrain/Dockerfile), and its root filesystem is read-only here, so every path a step writes is on an
emptyDir volume: `WORK_PATH` (the run directory and the dataset; kubelet creates an emptyDir world-writable, and
fsGroup 10001 makes the files Argo's init container unpacks into it group-owned by the step's user) and /tmp. Input
artifacts whose path lies under a mounted volume are unpacked into that volume by Argo's init container
(argoproj/argo-workflows workflow/controller/workflowpod.go: "artifact path overlaps with a mounted volume ... init
would have copied the artifact to the user's volume instead").

Where the data comes from: no step may read a runner's or a node's disk. The `dataset` parameter is the s3:// URI
of a published dataset directory; the first step (`forkcast_retrain.dataset_fetch`) downloads it and verifies each
file's sha256 against its dataset.json. Every later step gets that directory as an S3 artifact too, because prep
records the dataset's path and train and evaluate read the click files from it.

Run ``python -m forkcast_retrain.workflow render workflows`` to regenerate the file and
``python -m forkcast_retrain.workflow submit --param dataset=s3://B/datasets/D/ --wait --fetch-run run --bucket A``
to train on the cluster and bring the run directory back (what the CI job `train-on-cluster` does).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml

from forkcast_retrain.steps import DATA, RECIPE, RUN, Step
from forkcast_retrain.workflow_layout import (
    CANDIDATE_ENTRYPOINT,
    CANDIDATE_STEPS,
    DATA_PATH,
    ENTRYPOINT,
    RUN_PATH,
    WORK_PATH,
    data_key,
    run_key,
)

# The layout names are part of this module's interface too (the CI call, tests and docs name them from here).
__all__ = [
    "CANDIDATE_ENTRYPOINT",
    "CANDIDATE_STEPS",
    "ENTRYPOINT",
    "data_key",
    "main",
    "rendered_files",
    "run_key",
    "submit",
    "workflow",
    "workflow_template",
]

TEMPLATE_NAME = "forkcast-retrain"
# The namespace the Argo CD Application forkcast-workflows syncs workflows/ into (deploy/argocd/app-workflows.yaml):
# training pods apart from the serving namespaces, with their own service account, settings and credentials.
NAMESPACE = "forkcast-training"
SERVICE_ACCOUNT = "forkcast-retrain"  # workflows/rbac.yaml: may only report step results to the controller
FETCH_DATA = "fetch-data"  # the first task: the dataset from S3 into the work volume, verified
IMAGE = "registry.gitlab.com/forkcast/forkcast/retrain:main"
UID = 10001  # the retrain image's user (pipelines/retrain/Dockerfile: USER 10001:10001)
TMP_PATH = "/tmp"
# Writable volumes of every step's pod (the root filesystem is read-only): name -> mount path.
VOLUMES = {"work": WORK_PATH, "tmp": TMP_PATH}
# The artifact repository in the Workflow's namespace (workflows/artifact-repositories.yaml, key forkcast-s3): a
# bucket for intermediate runs, with the credentials Secret the steps use too.
ARTIFACT_REPOSITORY = {"configMap": "artifact-repositories", "key": "forkcast-s3"}
# Settings for the steps themselves (S3 endpoint and region: workflows/settings.yaml) and their S3 credentials (a
# Secret the cluster provides: manifests/provided-by-cluster.yaml).
SETTINGS_CONFIGMAP = "forkcast-retrain-settings"
CREDENTIALS_SECRET = "forkcast-retrain-credentials"
STEP_ENV_FROM = [
    {"configMapRef": {"name": SETTINGS_CONFIGMAP}},
    {"secretRef": {"name": CREDENTIALS_SECRET}},
]
# Parameters a Workflow must set: no default in the template, refused by `workflow` when absent.
REQUIRED_PARAMETERS = ("dataset",)
# Retries only for errors of the infrastructure (pod evicted, node lost), never for a step that failed on its own:
# a refused dataset or a failed training must stay a failure.
RETRY = {
    "limit": "3",
    "retryPolicy": "OnError",
    "backoff": {"duration": "30s", "factor": "2", "maxDuration": "15m"},
}
# Node disk the emptyDirs may fill, per step (kubelet evicts a pod past its limit). The full dataset is about 0.5 GB
# of parquet, extrapolated from the small preset (53 MB: 33.6 MB for 5.6 M click rows, 13.3 MB for 100 k users,
# measured with `forkcast-data generate --preset small`); fetch-data and prep hold it, its archive on upload and
# prep's arrays (1 M x 30 and 100 k x 10 float32, ~0.13 GB); train and evaluate hold the dataset and the run.
EPHEMERAL_STORAGE = {FETCH_DATA: "3Gi", "prep": "3Gi", "train": "2Gi", "evaluate": "2Gi"}
# Parquet is already compressed: the dataset artifact is archived without gzip work (level 0).
DATA_ARCHIVE = {"tar": {"compressionLevel": 0}}
FETCH_DATA_RESOURCES = {"cpu": "500m", "memory": "1Gi"}
HEADER = (
    "# Argo WorkflowTemplate: training a candidate on the cluster (fetch-data > prep > train > evaluate), submitted\n"
    "# and awaited by the GitLab job train-on-cluster (TRAIN_EXECUTOR=argo), which gates, publishes and promotes.\n"
    "# Generated by `python -m forkcast_retrain.workflow render workflows` from forkcast_retrain.steps; do not edit.\n"
)


def _values() -> dict[str, str]:
    return {RUN: RUN_PATH, DATA: DATA_PATH, RECIPE: "{{workflow.parameters.recipe}}"}


def _resources(name: str, cpu: str, memory: str) -> dict[str, Any]:
    storage = EPHEMERAL_STORAGE[name]
    return {
        "requests": {"cpu": cpu, "memory": memory, "ephemeral-storage": storage},
        "limits": {"memory": memory, "ephemeral-storage": storage},
    }


def _container(name: str, command: list[str], args: list[str], resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "image": "{{workflow.parameters.image}}",
        "command": command,
        "args": args,
        "envFrom": copy.deepcopy(STEP_ENV_FROM),  # copies: no YAML anchors in the output
        "resources": resources,
        "volumeMounts": [{"name": n, "mountPath": p} for n, p in VOLUMES.items()],
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }


def _fetch_data_template() -> dict[str, Any]:
    args = ["--dataset", "{{workflow.parameters.dataset}}", "--out", DATA_PATH]
    return {
        "name": FETCH_DATA,
        "retryStrategy": copy.deepcopy(RETRY),
        "container": _container(
            FETCH_DATA,
            ["python", "-m", "forkcast_retrain.dataset_fetch"],
            args,
            _resources(FETCH_DATA, **FETCH_DATA_RESOURCES),
        ),
        "outputs": {
            "artifacts": [
                {
                    "name": "data",
                    "path": DATA_PATH,
                    "archive": copy.deepcopy(DATA_ARCHIVE),
                    "s3": {"key": data_key("{{workflow.name}}")},
                }
            ]
        },
    }


def _step_template(s: Step, first: bool) -> dict[str, Any]:
    inputs: list[dict[str, Any]] = [{"name": "data", "path": DATA_PATH}]
    if not first:
        inputs.append({"name": "run", "path": RUN_PATH})
    return {
        "name": s.name,
        "retryStrategy": copy.deepcopy(RETRY),
        "inputs": {"artifacts": inputs},
        "container": _container(
            s.name,
            ["forkcast-retrain"],
            s.argv(_values()),
            _resources(s.name, s.resources.cpu, s.resources.memory),
        ),
        "outputs": {
            "artifacts": [
                {"name": "run", "path": RUN_PATH, "s3": {"key": run_key("{{workflow.name}}", s.name)}}
            ]
        },
    }


def _dag(name: str, steps: tuple[Step, ...]) -> dict[str, Any]:
    data = {"name": "data", "from": f"{{{{tasks.{FETCH_DATA}.outputs.artifacts.data}}}}"}
    tasks: list[dict[str, Any]] = [{"name": FETCH_DATA, "template": FETCH_DATA}]
    before = FETCH_DATA
    for i, s in enumerate(steps):
        artifacts = [dict(data)]
        if i:
            artifacts.append({"name": "run", "from": f"{{{{tasks.{before}.outputs.artifacts.run}}}}"})
        tasks.append(
            {
                "name": s.name,
                "template": s.name,
                "dependencies": [before],
                "arguments": {"artifacts": artifacts},
            }
        )
        before = s.name
    return {"name": name, "dag": {"tasks": tasks}}


def workflow_template() -> dict[str, Any]:
    """The WorkflowTemplate: parameters, the fetch-data template, one template per step, and the DAG chaining them."""
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "WorkflowTemplate",
        "metadata": {"name": TEMPLATE_NAME, "labels": {"app.kubernetes.io/part-of": "forkcast"}},
        "spec": {
            "entrypoint": ENTRYPOINT,
            "serviceAccountName": SERVICE_ACCOUNT,
            "artifactRepositoryRef": ARTIFACT_REPOSITORY,
            "activeDeadlineSeconds": 4 * 3600,
            "podGC": {"strategy": "OnPodSuccess"},
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": UID,
                "runAsGroup": UID,
                "fsGroup": UID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "volumes": [{"name": n, "emptyDir": {}} for n in VOLUMES],
            "arguments": {
                "parameters": [
                    {"name": "image", "value": IMAGE},
                    {
                        "name": "dataset",
                        "description": "s3://<bucket>/<dataset directory>/ holding dataset.json and its files",
                    },
                    {"name": "recipe", "value": "default"},
                ]
            },
            "templates": [
                _dag(ENTRYPOINT, CANDIDATE_STEPS),
                _fetch_data_template(),
                *(_step_template(s, i == 0) for i, s in enumerate(CANDIDATE_STEPS)),
            ],
        },
    }


def render(doc: dict[str, Any]) -> str:
    """The committed form of a document: its header comment, then block YAML in the order built above."""
    body = str(yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=110))
    return HEADER + body


def rendered_files() -> dict[str, str]:
    """File name → content of everything `render` writes (the hand-written files of workflows/ stay as they are)."""
    return {"workflowtemplate.yaml": render(workflow_template())}


def workflow(parameters: dict[str, str], entrypoint: str = ENTRYPOINT) -> dict[str, Any]:
    """A Workflow that runs the WorkflowTemplate from ``entrypoint`` with ``parameters`` overriding its defaults.

    Refuses (ValueError) what the controller would only refuse after submission, or a step after minutes: an
    unknown entrypoint or parameter, a required parameter left out, a dataset that is not an s3:// directory URI.
    """
    from forkcast_retrain.dataset_fetch import parse_s3_uri
    from forkcast_retrain.errors import DataError

    if entrypoint != ENTRYPOINT:
        raise ValueError(f"unknown entrypoint {entrypoint}; the template has one: {ENTRYPOINT}")
    known = {p["name"] for p in workflow_template()["spec"]["arguments"]["parameters"]}
    unknown = sorted(set(parameters) - known)
    if unknown:
        raise ValueError(
            f"unknown workflow parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    missing = [p for p in REQUIRED_PARAMETERS if not parameters.get(p)]
    if missing:
        raise ValueError(
            f"workflow parameter(s) {', '.join(missing)} required (dataset: the s3:// URI of a published dataset)"
        )
    try:
        parse_s3_uri(parameters["dataset"])
    except DataError as exc:
        raise ValueError(str(exc)) from exc
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {
            "generateName": f"{TEMPLATE_NAME}-",
            "labels": {"app.kubernetes.io/part-of": "forkcast"},
        },
        "spec": {
            "workflowTemplateRef": {"name": TEMPLATE_NAME},
            "entrypoint": entrypoint,
            "arguments": {"parameters": [{"name": k, "value": v} for k, v in sorted(parameters.items())]},
        },
    }


def submit(api_client: Any, namespace: str, parameters: dict[str, str], entrypoint: str = ENTRYPOINT) -> str:
    """Create the Workflow through the Kubernetes API (Argo's controller picks it up); returns its name."""
    from forkcast_retrain.cluster import create_workflow  # the Kubernetes client: only submitting needs it

    return create_workflow(api_client, namespace, workflow(parameters, entrypoint))


def _param(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def build_parser() -> argparse.ArgumentParser:
    """The command line (also used by tests/delivery to parse the CI job's call)."""
    parser = argparse.ArgumentParser(prog="python -m forkcast_retrain.workflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("render", help="write the WorkflowTemplate YAML into a directory")
    p.add_argument("out", type=Path, help="directory (workflows/ in this repository)")
    p = sub.add_parser(
        "submit", help="run the WorkflowTemplate on the cluster (a Workflow via the Kubernetes API)"
    )
    p.add_argument(
        "--namespace", default=NAMESPACE, help="namespace holding the WorkflowTemplate (default: %(default)s)"
    )
    p.add_argument(
        "--param",
        type=_param,
        action="append",
        default=[],
        help="NAME=VALUE: dataset (required, s3://<bucket>/<dataset directory>/), image, recipe",
    )
    p.add_argument(
        "--entrypoint",
        choices=[ENTRYPOINT],
        default=ENTRYPOINT,
        help=f"{FETCH_DATA} > {' > '.join(s.name for s in CANDIDATE_STEPS)} (the gate and the rest stay with"
        " the caller)",
    )
    p.add_argument(
        "--kubeconfig", type=Path, help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config or in-cluster)"
    )
    p.add_argument(
        "--wait", action="store_true", help="poll the Workflow until it ends; exit 1 unless it succeeded"
    )
    p.add_argument(
        "--timeout", type=float, default=4 * 3600 + 600, help="seconds --wait waits (default 4h10m)"
    )
    p.add_argument("--poll", type=float, default=15.0, help="seconds between two status reads (default 15)")
    p.add_argument(
        "--keep-on-timeout",
        action="store_true",
        help="leave the Workflow running when --timeout passes (default: stop it, as `argo stop` does)",
    )
    p.add_argument(
        "--fetch-run",
        type=Path,
        metavar="DIR",
        help="after --wait: unpack the run directory the last step left in S3 into DIR (needs --bucket)",
    )
    _bucket_arg(p)
    p = sub.add_parser(
        "fetch", help="unpack the run directory a finished Workflow left in S3 into a directory"
    )
    p.add_argument("workflow", help="the Workflow's name (as `submit` printed it)")
    p.add_argument("--out", type=Path, required=True, help="directory to unpack into")
    p.add_argument(
        "--step", default=CANDIDATE_STEPS[-1].name, help="whose run directory (default: %(default)s)"
    )
    _bucket_arg(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "render":
        args.out.mkdir(parents=True, exist_ok=True)
        for name, text in rendered_files().items():
            (args.out / name).write_text(text)
            print(f"wrote {args.out / name}")
        return 0
    # The cluster client (kubernetes, S3) is loaded only when talking to the cluster. It never imports this module
    # (what both need is in workflow_layout), so the dependency runs one way.
    from forkcast_retrain import cluster

    if args.command == "fetch":
        return cluster.fetch_command(args.bucket, args.workflow, args.out, args.step)
    if args.fetch_run and not args.wait:
        parser.error("--fetch-run needs --wait (the run directory exists once the Workflow succeeded)")
    try:
        manifest = workflow(dict(args.param), args.entrypoint)
    except ValueError as exc:
        parser.error(str(exc))
    return cluster.submit_command(args, manifest)


def _bucket_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--bucket",
        default="",
        help="bucket of the cluster's artifact repository (ConfigMap artifact-repositories, key forkcast-s3);"
        " endpoint and credentials from S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY",
    )


if __name__ == "__main__":
    sys.exit(main())
