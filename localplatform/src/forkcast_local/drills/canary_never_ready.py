"""A canary that never becomes ready is aborted by the progress deadline, and its release commit is reverted.

The release commit pins a sha256 that is not the published model.pt's (a corrupted release): the canary pod
downloads the version from S3, refuses to load it and never passes its readiness probe. The setWeight step cannot
complete, the Rollout makes no progress for progressDeadlineSeconds (600 s, compressed) and, with
progressDeadlineAbort, aborts (ProgressDeadlineExceeded). Then the rollback job CI runs (``forkcast-retrain
rollback``, given the aborted model version by hand as there is no Argo CD to ask) reverts the release commit in the
scratch GitOps clone: the overlay releases the stable version again.
"""

from __future__ import annotations

import argparse

from forkcast_local.rehearsal import scenario as s
from forkcast_local.rehearsal.controller import TIMED_OUT

NAME = "canary-never-ready"
SCENARIO = s.Scenario("never-ready", ("--epochs", "1", "--seed", "2"), bad_sha256=True, rollback=True)
# CI's rollback job allows exit 3 (Git reverted, MLflow aliases not moved); the rehearsal runs no MLflow.
ROLLBACK_OK = (0, 3)

add_arguments = s.add_arguments  # the options every canary drill takes


def check(result: s.Result) -> list[str]:
    o = result.outcome
    v, problems = s.aborted(result)
    if v is None:
        return problems
    if (v.decided_by, v.phase) != ("progressDeadline", TIMED_OUT):
        problems.append(f"expected the progress deadline to abort, got {v}")
    if result.canary_version in o.served:
        problems.append("the never-ready canary answered requests")
    if result.rollback is None or result.rollback.returncode not in ROLLBACK_OK:
        problems.append(f"rollback failed: {result.rollback.stderr if result.rollback else 'not run'}")
    if result.release_after_rollback != result.stable_version:
        problems.append(f"after the rollback the overlay releases {result.release_after_rollback}")
    return problems + s.client_failures(result)


def run(args: argparse.Namespace) -> int:
    return s.run_drill(SCENARIO, args, check, "OK: aborted by the progress deadline and reverted")
