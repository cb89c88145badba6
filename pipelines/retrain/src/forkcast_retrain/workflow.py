"""Training on the cluster as an Argo WorkflowTemplate, generated from `forkcast_retrain.steps` (SPEC §7).

Why generated and not hand-written: the GitLab jobs and the cluster must run the same calls, so both derive from
one step list. Plain dicts emitted as YAML (no hera): the output is small, reviewed as committed files under
workflows/, and regenerating must give the same bytes (a test checks it). The rest of workflows/ (ServiceAccount
and executor RBAC, settings, the artifact repository, the kustomization Argo CD syncs) is hand-written beside it.

Argo Workflows is only the executor, never a scheduler: GitLab's schedule and its alert trigger start every
retraining, and with TRAIN_EXECUTOR=argo the CI job `train-on-cluster` submits this template and waits for it
(`forkcast_retrain.cluster`). The template therefore runs only the heavy steps that make a candidate,
prep > train > evaluate, and leaves the run directory in S3 under `run_key`; the gate, publish and promote stay in
the pipeline, so nothing the cluster trains is ever published without being promoted through Git.

Where the data comes from: no step reads a runner's or a node's disk. The parameters `dataset` (an s3:// URI of a
lake dataset, as `forkcast-data publish` / `generate --out s3://…` write it) and `dataset_version` (a version
number or an ISO-8601 time; empty: the newest) are the same two values, with the same names, as the GitLab
pipeline's inputs; prep reads that snapshot from S3 itself (forkcast_lake) and records which version it resolved
in the run directory, which every later step gets from the artifact repository.

Training runs on N pods (parameter `train_nodes`): `torchrun` data-parallel with a rendezvous on pod 0 through a
headless Service (`forkcast_retrain.workflow_torchrun`, which says how and why).

Where files live in a step's pod: the retrain image creates nothing outside its user's home (uid 10001,
pipelines/retrain/Dockerfile), and its root filesystem is read-only here, so every path a step writes is on an
emptyDir volume: `WORK_PATH` (the run directory and the dataset cache; kubelet creates an emptyDir world-writable,
and fsGroup 10001 makes the files Argo's init container unpacks into it group-owned by the step's user) and /tmp.
Input artifacts whose path lies under a mounted volume are unpacked into that volume by Argo's init container
(argoproj/argo-workflows workflow/controller/workflowpod.go: "artifact path overlaps with a mounted volume ... init
would have copied the artifact to the user's volume instead").

Run ``python -m forkcast_retrain.workflow render workflows`` to regenerate the files and
``python -m forkcast_retrain.workflow submit --param dataset=s3://B/datasets/D --wait --fetch-run run --bucket A``
to train on the cluster and bring the run directory back (what the CI job `train-on-cluster` does).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml

from forkcast_retrain import workflow_torchrun as torchrun
from forkcast_retrain.steps import DATA, DATA_VERSION, RECIPE, RUN, Step
from forkcast_retrain.workflow_layout import (
    CANDIDATE_ENTRYPOINT,
    CANDIDATE_STEPS,
    DATASET_CACHE_PATH,
    ENTRYPOINT,
    RUN_PATH,
    WORK_PATH,
    run_key,
)

# The layout names are part of this module's interface too (the CI call, tests and docs name them from here).
__all__ = [
    "CANDIDATE_ENTRYPOINT",
    "CANDIDATE_STEPS",
    "ENTRYPOINT",
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
# Where forkcast_lake downloads a dataset snapshot it reads (FORKCAST_DATASET_CACHE): on the work volume, since
# the default under $HOME is on the read-only root filesystem.
STEP_ENV = [{"name": "FORKCAST_DATASET_CACHE", "value": DATASET_CACHE_PATH}]
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
# measured with `forkcast-data generate --preset small`); each step may download the snapshot into its cache, and
# prep adds its arrays (1 M x 30 and 100 k x 10 float32, ~0.13 GB), which every later step receives in the run.
EPHEMERAL_STORAGE = {"prep": "3Gi", "train": "3Gi", "evaluate": "3Gi"}
HEADER = (
    "# Argo WorkflowTemplate: training a candidate on the cluster (prep > train on N pods with torchrun > evaluate),\n"
    "# submitted and awaited by the GitLab job train-on-cluster (TRAIN_EXECUTOR=argo), which gates, publishes and\n"
    "# promotes. Generated by `python -m forkcast_retrain.workflow render workflows` from forkcast_retrain.steps.\n"
)


def _values() -> dict[str, str]:
    return {
        RUN: RUN_PATH,
        DATA: "{{workflow.parameters.dataset}}",
        DATA_VERSION: "{{workflow.parameters.dataset_version}}",
        RECIPE: "{{workflow.parameters.recipe}}",
    }


def _resources(name: str, cpu: str, memory: str) -> dict[str, Any]:
    storage = EPHEMERAL_STORAGE[name]
    return {
        "requests": {"cpu": cpu, "memory": memory, "ephemeral-storage": storage},
        "limits": {"memory": memory, "ephemeral-storage": storage},
    }


def _container(command: list[str], args: list[str], resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "image": "{{workflow.parameters.image}}",
        "command": command,
        "args": args,
        "env": copy.deepcopy(STEP_ENV),
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


def _run_output(step_name: str) -> dict[str, Any]:
    return {
        "artifacts": [
            {"name": "run", "path": RUN_PATH, "s3": {"key": run_key("{{workflow.name}}", step_name)}}
        ]
    }


def _step_template(s: Step, first: bool) -> dict[str, Any]:
    template: dict[str, Any] = {"name": s.name, "retryStrategy": copy.deepcopy(RETRY)}
    if not first:
        template["inputs"] = {"artifacts": [{"name": "run", "path": RUN_PATH}]}
    template["container"] = _container(
        ["forkcast-retrain"], s.argv(_values()), _resources(s.name, s.resources.cpu, s.resources.memory)
    )
    template["outputs"] = _run_output(s.name)
    return template


def _train_templates(s: Step) -> list[dict[str, Any]]:
    """Pod 0 (keeps the run directory) and its twin for pods 1..N-1 (no outputs): torchrun on each.

    ``--threads`` is the pod's CPU request: inside a container os.cpu_count() counts the node's cores, not the
    pod's, and torch would start that many threads on a few cores.
    """
    templates = []
    for name, keeps_run in ((s.name, True), (s.name + torchrun.WORKERS_SUFFIX, False)):
        node = f"{{{{inputs.parameters.{torchrun.NODE_INPUT}}}}}"
        args = [*torchrun.launcher(node)[1:], *s.argv(_values()), "--threads", s.resources.cpu]
        template: dict[str, Any] = {
            "name": name,
            "retryStrategy": copy.deepcopy(RETRY),
            "metadata": torchrun.pod_metadata(node),
            "podSpecPatch": torchrun.pod_spec_patch(node),
            "inputs": {
                "parameters": [{"name": torchrun.NODE_INPUT}],
                "artifacts": [{"name": "run", "path": RUN_PATH}],
            },
            "container": _container(
                torchrun.launcher(node)[:1], args, _resources(s.name, s.resources.cpu, s.resources.memory)
            ),
        }
        if keeps_run:
            template["outputs"] = _run_output(s.name)
        templates.append(template)
    return templates


def _dag(name: str, steps: tuple[Step, ...]) -> dict[str, Any]:
    tasks: list[dict[str, Any]] = []
    before = ""
    for s in steps:
        run = [{"name": "run", "from": f"{{{{tasks.{before}.outputs.artifacts.run}}}}"}] if before else []
        task: dict[str, Any] = {"name": s.name, "template": s.name}
        if before:
            task["dependencies"] = [before]
        if s.name == "train":
            node = {"parameters": [{"name": torchrun.NODE_INPUT, "value": "0"}], "artifacts": run}
            workers = {
                "parameters": [{"name": torchrun.NODE_INPUT, "value": "{{item}}"}],
                "artifacts": copy.deepcopy(run),  # copies: no YAML anchors in the output
            }
            tasks.append({**task, "arguments": node})
            tasks.append(
                {
                    "name": s.name + torchrun.WORKERS_SUFFIX,
                    "template": s.name + torchrun.WORKERS_SUFFIX,
                    "dependencies": [before],
                    "withSequence": torchrun.workers_sequence(),
                    "arguments": workers,
                }
            )
            # The next step waits for pod 0 only: it holds the run; the workers end with it (the last collective).
        elif run:
            tasks.append({**task, "arguments": {"artifacts": run}})
        else:
            tasks.append(task)
        before = s.name
    return {"name": name, "dag": {"tasks": tasks}}


def workflow_template() -> dict[str, Any]:
    """The WorkflowTemplate: parameters, one template per step (two for train), and the DAG chaining them."""
    templates: list[dict[str, Any]] = [_dag(ENTRYPOINT, CANDIDATE_STEPS)]
    for i, s in enumerate(CANDIDATE_STEPS):
        templates += _train_templates(s) if s.name == "train" else [_step_template(s, i == 0)]
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
            # One training at a time: the rendezvous names (train-0.forkcast-train) are fixed.
            "synchronization": {"mutexes": [{"name": torchrun.MUTEX}]},
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
                        "description": "s3://<bucket>/<prefix> of a lake dataset (forkcast-data publish)",
                    },
                    {
                        "name": "dataset_version",
                        "value": "",
                        "description": "its version number or an ISO-8601 time; empty: the newest",
                    },
                    {"name": "recipe", "value": "default"},
                    {
                        "name": torchrun.NODES_PARAMETER,
                        "value": torchrun.DEFAULT_NODES,
                        "description": "pods that train together (torchrun, one process each)",
                    },
                ]
            },
            "templates": templates,
        },
    }


def render(doc: dict[str, Any], header: str = HEADER) -> str:
    """The committed form of a document: its header comment, then block YAML in the order built above."""
    body = str(yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=110))
    return header + body


def rendered_files() -> dict[str, str]:
    """File name → content of everything `render` writes (the hand-written files of workflows/ stay as they are)."""
    return {
        "workflowtemplate.yaml": render(workflow_template()),
        "train-rendezvous.yaml": render(torchrun.service(), torchrun.SERVICE_HEADER),
    }


def as_pinned(template: str, ci_file: Path) -> str:
    """The rendered template with the retrain image pinned to the digest ``ci_file`` runs, if it runs one
    (ValueError when the file pins several).

    Why: after a release, `release-images` (`set-images --ci-file --workflow-template`) pins the CI file's
    references and the template's default image to the same build digest; regenerating the template from ``IMAGE``
    (the bootstrap ``:main``) would silently put the movable tag back into what a Workflow submitted without an
    image runs with the retrain S3 credentials (issue 18.3)."""
    from forkcast_retrain.images import ci_image_refs, pin_ci_image

    if not ci_file.is_file():
        return template
    digests = {ref.split("@", 1)[1] for ref in ci_image_refs(ci_file.read_text()) if "@" in ref}
    if len(digests) > 1:
        raise ValueError(f"{ci_file} pins the retrain image to several digests: {sorted(digests)}")
    return pin_ci_image(template, digests.pop()) if digests else template


def check_dataset_uri(uri: str) -> None:
    """Refuse (ValueError) a dataset that is not ``s3://<bucket>/<prefix>``: no step may read a node's disk."""
    from forkcast_lake.storage import split_s3_uri  # the lake's own reading of a dataset URI

    try:
        _, prefix = split_s3_uri(uri)
    except ValueError:
        prefix = ""
    if not prefix:
        raise ValueError(
            f"dataset {uri!r} is not an s3:// URI of a lake dataset (expected s3://<bucket>/<prefix>)"
        )


def workflow(parameters: dict[str, str], entrypoint: str = ENTRYPOINT) -> dict[str, Any]:
    """A Workflow that runs the WorkflowTemplate from ``entrypoint`` with ``parameters`` overriding its defaults.

    Refuses (ValueError) what the controller would only refuse after submission, or a step after minutes: an
    unknown entrypoint or parameter, a required parameter left out, a dataset that is not an s3:// URI, a number
    of training pods that is not 1..MAX_NODES.
    """
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
            f"workflow parameter(s) {', '.join(missing)} required (dataset: the s3:// URI of a lake dataset)"
        )
    check_dataset_uri(parameters["dataset"])
    torchrun.check_nodes(parameters.get(torchrun.NODES_PARAMETER, torchrun.DEFAULT_NODES))
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
    p.add_argument(
        "--ci-file",
        type=Path,
        default=Path(".gitlab-ci.yml"),
        help="keep the retrain image digest this CI file pins (release-images writes it into both; default "
        ".gitlab-ci.yml of the working directory; absent: the bootstrap :main)",
    )
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
        help="NAME=VALUE: dataset (required, s3://<bucket>/<prefix> of a lake dataset), dataset_version (default:"
        f" the newest), image, recipe, {torchrun.NODES_PARAMETER} (pods training together, default 1)",
    )
    p.add_argument(
        "--entrypoint",
        choices=[ENTRYPOINT],
        default=ENTRYPOINT,
        help=f"{' > '.join(s.name for s in CANDIDATE_STEPS)} (the gate and the rest stay with the caller)",
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
        files = rendered_files()
        try:  # every file rendered before any is written: a refusal leaves the folder as it was
            files["workflowtemplate.yaml"] = as_pinned(files["workflowtemplate.yaml"], args.ci_file)
        except ValueError as exc:
            parser.error(str(exc))
        args.out.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
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
