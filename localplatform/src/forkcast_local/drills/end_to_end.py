"""The whole MLOps loop end to end: serve, drift, OnlineAucLow fires, retrain (CI's steps), canary, AUC recovers.

serve → feedback (simulator) → online AUC → inject drift → the alert → Alertmanager → alert receiver → "GitLab"
trigger → the retraining pipeline with CI's calls → gate → publish → promote into a scratch GitOps repo → feature
cutover → the canary of rollouts/ promoted → the online AUC of the new version recovers; a report of every stage.
Its options are those of ``forkcast_local.drill`` (``forkcast-local drill end-to-end --help``).
"""

from __future__ import annotations

import argparse

NAME = "end-to-end"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("options", nargs=argparse.REMAINDER, help="options of the end-to-end drill (--help)")


def run(args: argparse.Namespace) -> int:
    from forkcast_local.drill import main

    return main(list(args.options))
