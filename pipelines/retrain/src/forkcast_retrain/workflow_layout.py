"""Where a cluster training run keeps its work: the DAG's steps, the paths in a step's pod, the S3 keys of its runs.

Shared by the template that writes them (``workflow``, rendered into workflows/) and the client that submits a
Workflow and reads its run back (``cluster``); kept apart so that neither imports the other's module for them.
"""

from __future__ import annotations

from forkcast_retrain.steps import STEPS, Step, step

# The one DAG: the steps that make a candidate (everything before the gate, whose decision and what follows it stay
# with the GitLab pipeline). CANDIDATE_ENTRYPOINT is the name callers (CI, tests) use for it.
ENTRYPOINT = CANDIDATE_ENTRYPOINT = "train-candidate"
CANDIDATE_STEPS: tuple[Step, ...] = STEPS[: STEPS.index(step("gate"))]
WORK_PATH = "/work"
RUN_PATH = f"{WORK_PATH}/run"
DATASET_CACHE_PATH = f"{WORK_PATH}/datasets"  # where a step downloads the dataset snapshot it reads

# Where each step's run directory lands in the artifact repository's bucket: one scheme for the template (which
# writes it, with Argo's `{{workflow.name}}`) and for `forkcast_retrain.cluster` (which reads it back after the run).
RUN_KEY_PREFIX = "forkcast-runs"


def run_key(workflow_name: str, step_name: str) -> str:
    """The S3 key of the run directory (a .tgz holding `run/...`) that step ``step_name`` of a Workflow left."""
    return f"{RUN_KEY_PREFIX}/{workflow_name}/{step_name}.tgz"
