"""The retraining steps (prep > train > evaluate > gate > publish) as data: one source of truth for every runner.

The GitLab jobs (`.gitlab-ci.yml`, checked by tests/delivery/test_workflows.py) and the Argo WorkflowTemplate
(`forkcast_retrain.workflow`, rendered into workflows/) both run exactly these `forkcast-retrain` calls. Arguments
name placeholders instead of paths, so each runner substitutes its own: CI variables in GitLab, the pod's mounted
paths and workflow parameters in Argo. A renamed flag is changed here once and both runners follow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# Placeholders an argument may be: each runner maps every one of them to its own spelling.
RUN = "{run}"  # the run directory the steps hand on to each other
# The dataset: an s3:// URI of a published snapshot (forkcast-data publish / generate --out s3://…) or a directory,
# and which version of it (a number or an ISO-8601 time; empty: the newest), read by prep (forkcast_lake).
DATA = "{data}"
DATA_VERSION = "{data_version}"
RECIPE = "{recipe}"  # the training recipe's name
PLACEHOLDERS = (RUN, DATA, DATA_VERSION, RECIPE)


@dataclass(frozen=True)
class Resources:
    """What one step asks the scheduler for (CPU only: the retrain image carries the CPU build of torch)."""

    cpu: str
    memory: str


@dataclass(frozen=True)
class Step:
    """One `forkcast-retrain` call; ``needs_data`` marks the step that reads the raw dataset."""

    name: str
    args: tuple[str, ...]
    resources: Resources
    needs_data: bool = False

    def argv(self, values: Mapping[str, str]) -> list[str]:
        """The call's arguments with each placeholder replaced by the runner's value for it."""
        missing = [p for p in PLACEHOLDERS if p in self.args and p not in values]
        if missing:
            raise KeyError(f"step {self.name}: no value for placeholder(s) {', '.join(missing)}")
        return [values.get(a, a) for a in self.args]


STEPS: tuple[Step, ...] = (
    Step(
        "prep",
        ("prep", "--data", DATA, "--data-version", DATA_VERSION, "--out", RUN),
        Resources("1", "2Gi"),
        needs_data=True,
    ),
    Step(
        "train",
        ("train", "--out", RUN, "--recipe", RECIPE, "--no-progress"),
        Resources("4", "8Gi"),
    ),
    Step("evaluate", ("evaluate", "--out", RUN), Resources("2", "4Gi")),
    # Exit 1 when the challenger loses or the data drifted (unless the run's trigger.json names the alert that asked
    # for it): a decision, so no runner retries it as a failure.
    Step("gate", ("gate", "--out", RUN, "--champion", "auto"), Resources("1", "2Gi")),
    Step("publish", ("publish", "--out", RUN), Resources("500m", "1Gi")),
)


def step(name: str) -> Step:
    """The step called ``name`` (KeyError naming the known steps otherwise)."""
    for s in STEPS:
        if s.name == name:
            return s
    raise KeyError(f"no retraining step {name!r}; steps: {', '.join(s.name for s in STEPS)}")
