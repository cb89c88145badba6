"""A good canary is promoted to 100 %: the local overlay's Rollout walks every step as Argo Rollouts would.

A second model trained like the stable one (another seed) is released by a commit; its pods come up beside the
stable ones in Argo's replica-based counts (no traffic router: the canary's share of requests is its share of ready
pods), the background error-ratio and p95-latency analyses and the online-AUC step pass, and the canary becomes the
stable ReplicaSet. No client request fails while pods start and terminate.
"""

from __future__ import annotations

import argparse

from forkcast_local.rehearsal import scenario as s

NAME = "canary-good"
SCENARIO = s.Scenario("good", ("--epochs", "1", "--seed", "1"))

add_arguments = s.add_arguments  # the options every canary drill takes


def check(result: s.Result) -> list[str]:
    """What must hold: Healthy at 100 % on the canary, no verdict, no failed request."""
    o, problems = result.outcome, []
    if (o.status.phase, o.status.weight) != ("Healthy", 100):
        problems.append(f"expected Healthy at 100 %, got {o.status.phase} at {o.status.weight} %")
    if o.verdict is not None:
        problems.append(f"a verdict was reached: {o.verdict}")
    return problems + s.client_failures(result)


def run(args: argparse.Namespace) -> int:
    return s.run_drill(SCENARIO, args, check, "OK: the canary was promoted")
