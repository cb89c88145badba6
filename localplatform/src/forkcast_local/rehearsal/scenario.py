"""One canary drill end to end: tiny data and models, two releases promoted in a scratch GitOps clone, the update.

Shared by the four ``drills/canary_*.py``: each names its canary (how it is trained, or how its release is broken),
the client traffic and the time scale, and says what must hold at the end (its ``check``); ``run_scenario`` does the
rest and returns the rehearsal's ``Outcome`` and, for a canary the Rollout aborted, what the rollback job did to the
clone. ``run_drill`` is every canary drill's ``run``; ``aborted`` and ``client_failures`` are the checks they share.
"""

from __future__ import annotations

import argparse
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from forkcast_local.config import load_config
from forkcast_local.rehearsal.controller import Verdict
from forkcast_local.rehearsal.releases import Releases, dataset, train
from forkcast_local.rehearsal.runner import Outcome, Update, rehearse
from forkcast_local.rehearsal.traffic import Traffic

STABLE_TRAINING = ("--epochs", "1")


@dataclass(frozen=True)
class Scenario:
    """A canary drill: the canary's training options, whether its release pins a wrong sha256, the traffic."""

    name: str
    canary_training: tuple[str, ...]
    traffic: Traffic = field(default_factory=Traffic)
    bad_sha256: bool = False
    rollback: bool = False


@dataclass
class Result:
    outcome: Outcome
    stable_version: str
    canary_version: str
    release_commit: str = ""
    rollback: subprocess.CompletedProcess[str] | None = None
    release_after_rollback: str = ""
    log: list[str] = field(default_factory=list)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every canary drill takes."""
    parser.add_argument(
        "--work", type=Path, required=True, help="folder for the run (data and models are reused)"
    )
    parser.add_argument(
        "--cache", type=Path, help="folder of the tiny dataset and trained models (default: --work)"
    )
    parser.add_argument(
        "--time-scale", type=float, default=30.0, help="divide every duration by this (default 30)"
    )
    parser.add_argument("--timeout", type=float, default=240.0, help="give up after this many seconds")


def _break_sha256(repo: Path, overlay: str) -> None:
    """Amend the release commit so it pins a sha256 that is not the published model's (a corrupted release)."""
    from forkcast_retrain.promote import release_path

    path = release_path(repo, overlay)
    text = path.read_text()
    broken = re.sub(r'(FORKCAST_MODEL_SHA256: ")([0-9a-f]{64})(")', lambda m: m[1] + "0" * 64 + m[3], text)
    if broken == text:
        raise RuntimeError(f"{path} has no FORKCAST_MODEL_SHA256 to break")
    path.write_text(broken)
    subprocess.run(["git", "-C", str(repo), "commit", "-q", "--amend", "--no-edit", "-a"], check=True)


def run_scenario(
    scenario: Scenario, work: Path, *, cache: Path | None, time_scale: float, timeout_s: float
) -> Result:
    config = load_config(root=work / "platform")
    cache = cache or work
    data = dataset(cache, config.bin_dir)
    stable_run = train(data, cache / "stable", config.bin_dir, *STABLE_TRAINING)
    canary_run = train(data, cache / scenario.name, config.bin_dir, *scenario.canary_training)
    releases = Releases(config).start()
    try:
        stable_version = releases.publish(stable_run, "stable")
        releases.promote(stable_version)
        stable, stack, spec = releases.release()
        canary_version = releases.publish(canary_run, scenario.name)
        commit = releases.promote(canary_version)
        if scenario.bad_sha256:
            _break_sha256(config.gitops, config.overlay)
            commit = subprocess.run(
                ["git", "-C", str(config.gitops), "rev-parse", "HEAD"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
        canary, _, _ = releases.release()
        update = Update(stack, spec, stable, canary, data=data, work=work / "rehearsal", time_scale=time_scale,
                        traffic=scenario.traffic)  # fmt: skip
        outcome = rehearse(update, timeout_s=timeout_s)
        result = Result(outcome, stable_version, canary_version, commit)
        if scenario.rollback and outcome.status.phase == "Degraded":
            result.rollback = releases.rollback(canary_version)
            result.release_after_rollback = releases.head_release()
        return result
    finally:
        releases.stop()


def report(result: Result) -> str:
    o = result.outcome
    v = o.verdict
    lines = [
        f"stable {result.stable_version} -> canary {result.canary_version}",
        f"phase {o.status.phase} ({o.status.message}) at step {o.status.step_index}, weight {o.status.weight}",
        f"verdict: {v.decided_by} {v.phase} {v.template or ''}/{v.metric or ''}: {v.message}"
        if v
        else "verdict: none",
        f"requests {o.sent}, failed {o.failed}; served {dict(o.served)}; after the end {dict(o.served_after_end)}",
    ]
    if result.rollback is not None:
        lines.append(f"rollback exit {result.rollback.returncode}: {result.rollback.stdout.strip()[-300:]}")
        lines.append(f"release after rollback: {result.release_after_rollback}")
    return "\n".join(lines)


def aborted(result: Result) -> tuple[Verdict | None, list[str]]:
    """The verdict of an aborted update (phase Degraded), else None and the one problem that says what happened."""
    o = result.outcome
    if o.status.phase != "Degraded" or o.verdict is None:
        return None, [f"expected an abort, got {o.status.phase} ({o.status.message})"]
    return o.verdict, []


def client_failures(result: Result) -> list[str]:
    """What every canary drill demands: no client request failed while pods started, served and terminated."""
    failed = result.outcome.failed
    return [f"{failed} client requests failed"] if failed else []


def run_drill(
    scenario: Scenario, args: argparse.Namespace, check: Callable[[Result], list[str]], success: str
) -> int:
    """A canary drill's ``run``: the scenario with the options of ``add_arguments``, its report, then each problem
    ``check`` finds (exit status 1) or ``success`` (exit status 0)."""
    result = run_scenario(
        scenario, Path(args.work), cache=args.cache, time_scale=args.time_scale, timeout_s=args.timeout
    )
    print(report(result))
    problems = check(result)
    print("\n".join(problems) or success)
    return 1 if problems else 0
