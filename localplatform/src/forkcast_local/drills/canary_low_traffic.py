"""A canary with too little feedback for the online-AUC template pauses Inconclusive; it is not aborted.

Each response shows 5 restaurants (a short list) and is labelled on those 5 only, so the requests still reach the
latency and error templates' min-requests while the labelled pairs stay under inference-online-auc's min-samples:
its query returns nothing, neither condition holds, every measurement is Inconclusive, and past inconclusiveLimit the
run is Inconclusive. Argo Rollouts then pauses the Rollout (InconclusiveAnalysis) for a person to decide; the canary
keeps its pods and nothing is rolled back.
"""

from __future__ import annotations

import argparse

from forkcast_local.rehearsal import scenario as s
from forkcast_local.rehearsal.controller import PAUSE_INCONCLUSIVE
from forkcast_local.rehearsal.traffic import Traffic

NAME = "canary-low-traffic"
SCENARIO = s.Scenario(
    "low-traffic", ("--epochs", "1", "--seed", "3"), traffic=Traffic(rate_per_s=40.0, size=5)
)
TEMPLATE = "inference-online-auc"

add_arguments = s.add_arguments  # the options every canary drill takes


def check(result: s.Result) -> list[str]:
    o, problems = result.outcome, []
    v = o.verdict
    if (o.status.phase, o.status.message) != ("Paused", PAUSE_INCONCLUSIVE) or v is None:
        return [f"expected Paused ({PAUSE_INCONCLUSIVE}), got {o.status.phase} ({o.status.message})"]
    if (v.template, v.phase) != (TEMPLATE, "Inconclusive") or "inconclusiveLimit" not in v.message:
        problems.append(f"expected {TEMPLATE} Inconclusive past its inconclusiveLimit, got {v}")
    if o.status.canary_replicas == 0:
        problems.append("the paused canary was scaled down (an abort, not a pause)")
    return problems + s.client_failures(result)


def run(args: argparse.Namespace) -> int:
    return s.run_drill(SCENARIO, args, check, f"OK: paused Inconclusive by {TEMPLATE}")
