"""A worse model is aborted by the online-AUC analysis while the latency and error templates pass.

The canary is trained worse, not copied: the original assignment's recipe (raw inputs, lr 1e-8) for one epoch, so
its ranking is barely better than chance. Its pods are as fast and as healthy as the stable's, so the background
inference-error-ratio and inference-p95-latency analyses keep passing; the step analysis inference-online-auc
compares the canary's online AUC with the stable's (clicks from the feedback simulator) and fails
(failureLimit 1: two failed measurements); the Rollout aborts: the canary is scaled to 0 and the stable serves all
traffic again.
"""

from __future__ import annotations

import argparse

from forkcast_local.rehearsal import scenario as s

NAME = "canary-worse-model"
SCENARIO = s.Scenario("worse", ("--recipe", "original", "--epochs", "1"))
TEMPLATE, METRIC = "inference-online-auc", "online-auc-vs-stable"

add_arguments = s.add_arguments  # the options every canary drill takes


def check(result: s.Result) -> list[str]:
    """Degraded by the online-AUC step's Failed run, the background analyses not Failed, stable serving after."""
    o = result.outcome
    v, problems = s.aborted(result)
    if v is None:
        return problems
    if (v.template, v.metric, v.phase) != (TEMPLATE, METRIC, "Failed") or not v.decided_by.startswith("step"):
        problems.append(f"expected the {TEMPLATE} step analysis to fail, got {v}")
    if set(o.served_after_end) - {result.stable_version}:
        problems.append(f"after the abort the canary still served: {dict(o.served_after_end)}")
    return problems + s.client_failures(result)


def run(args: argparse.Namespace) -> int:
    return s.run_drill(SCENARIO, args, check, f"OK: aborted by {TEMPLATE}/{METRIC}")
