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
from pathlib import Path

from forkcast_local.rehearsal import scenario as s

NAME = "canary-worse-model"
SCENARIO = s.Scenario("worse", ("--recipe", "original", "--epochs", "1"))
TEMPLATE, METRIC = "inference-online-auc", "online-auc-vs-stable"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    s.add_arguments(parser)


def check(result: s.Result) -> list[str]:
    """Degraded by the online-AUC step's Failed run, the background analyses not Failed, stable serving after."""
    o, problems = result.outcome, []
    v = o.verdict
    if o.status.phase != "Degraded" or v is None:
        return [f"expected an abort, got {o.status.phase} ({o.status.message})"]
    if (v.template, v.metric, v.phase) != (TEMPLATE, METRIC, "Failed") or not v.decided_by.startswith("step"):
        problems.append(f"expected the {TEMPLATE} step analysis to fail, got {v}")
    if set(o.served_after_end) - {result.stable_version}:
        problems.append(f"after the abort the canary still served: {dict(o.served_after_end)}")
    if o.failed:
        problems.append(f"{o.failed} client requests failed")
    return problems


def run(args: argparse.Namespace) -> int:
    result = s.run_scenario(
        SCENARIO, Path(args.work), cache=args.cache, time_scale=args.time_scale, timeout_s=args.timeout
    )
    print(s.report(result))
    problems = check(result)
    print("\n".join(problems) or f"OK: aborted by {TEMPLATE}/{METRIC}")
    return 1 if problems else 0
