"""The release subcommands of ``forkcast-retrain``: gate, publish, promote, and the GitOps ones (SPEC §4, §8).

Settings: S3 via S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, FORKCAST_BUCKET,
FORKCAST_MODEL_NAME, FORKCAST_MODEL_CACHE; MLflow via MLFLOW_TRACKING_URI (unset: a local ./mlruns file store).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from forkcast_registry.errors import RegistryError
from forkcast_registry.registry import ModelRegistry
from forkcast_registry.settings import RegistrySettings
from forkcast_retrain.cli_gitops import GITOPS_COMMANDS, add_gitops_commands, run_gitops_command
from forkcast_retrain.errors import DataError
from forkcast_retrain.gate_policy import GateThresholds, triggering_alert
from forkcast_retrain.gitops import push_with_retry
from forkcast_retrain.promote import promote

RELEASE_COMMANDS = ("gate", "publish", "promote", "export", *GITOPS_COMMANDS)


def add_release_commands(sub: Any) -> None:
    t = GateThresholds()
    p = sub.add_parser("gate", help="challenger vs champion on the same held-out rows; exit 1 when it fails")
    p.add_argument("--out", type=Path, required=True, help="the evaluated run directory (the challenger)")
    p.add_argument(
        "--champion",
        default="auto",
        help="registry version of the champion; 'auto' = MLflow alias champion (none if unset); 'none' = no champion",
    )
    p.add_argument(
        "--auc-floor", type=float, default=t.auc_floor, help=f"minimum ROC-AUC (default {t.auc_floor})"
    )
    p.add_argument(
        "--auc-epsilon", type=float, default=t.auc_epsilon, help="allowed ROC-AUC loss vs champion"
    )
    p.add_argument(
        "--logloss-margin", type=float, default=t.logloss_margin, help="allowed logloss gain vs champion"
    )
    p.add_argument(
        "--accuracy-floor",
        type=float,
        default=t.accuracy_floor,
        help=f"minimum test accuracy (default {t.accuracy_floor}, the original assignment's bar)",
    )
    p.add_argument(
        "--recent-champions",
        type=int,
        default=t.recent_champions,
        help="with --champion auto, also hold the ROC-AUC within ε of the best of the last N champions "
        f"(MLflow history; default {t.recent_champions}; 1 = the current champion only)",
    )
    p.add_argument(
        "--psi-max", type=float, default=t.psi_max, help=f"max PSI of any feature (default {t.psi_max})"
    )
    p.add_argument(
        "--allow-drift",
        action="store_true",
        help="report drift but do not fail on it (implied when trigger.json names the alert that asked for the run)",
    )
    p = sub.add_parser("publish", help="upload the run as an immutable registry version; MLflow challenger")
    p.add_argument("--out", type=Path, required=True, help="the evaluated (and gated) run directory")
    p.add_argument("--create-bucket", action="store_true", help="create FORKCAST_BUCKET if it does not exist")
    p = sub.add_parser("promote", help="write a version into an overlay's release file and commit it to Git")
    p.add_argument("--version", help="registry version to release (required)")
    p.add_argument("--overlay", required=True, help="kustomize overlay under manifests/overlays/ (dev, prod)")
    p.add_argument(
        "--repo", type=Path, default=Path.cwd(), help="the Git checkout holding manifests/ (default .)"
    )
    p.add_argument(
        "--branch", help="commit on this new branch (for a merge request) instead of the current one"
    )
    p.add_argument(
        "--push",
        action="store_true",
        help="push the commit (to --branch, else --target-branch), fetching and rebasing on a rejection",
    )
    p.add_argument("--remote", default="origin", help="remote to push to (default origin)")
    p.add_argument(
        "--target-branch", default="main", help="branch to push to without --branch (default main)"
    )
    p.add_argument(
        "--push-option",
        action="append",
        default=[],
        help="git push option, repeatable (GitLab: ci.skip, ...)",
    )
    p.add_argument("--push-attempts", type=int, default=5, help="pushes before giving up (default 5)")
    p = sub.add_parser(
        "export",
        help="write a run's version files (serving form included) into a directory, without S3",
        description="For local serving (FORKCAST_MODEL_DIR, local environment only) and the serving "
        "benchmarks: the same files publish would upload, checked the same way.",
    )
    p.add_argument("--out", type=Path, required=True, help="the evaluated run directory")
    p.add_argument("--to", type=Path, required=True, help="directory to write the version's files into")
    add_gitops_commands(sub)


def _champion(arg: str, registry: ModelRegistry, tracker: Any, alias: str) -> tuple[Path | None, str | None]:
    version = tracker.alias_version(alias) if arg == "auto" else None if arg == "none" else arg
    return (registry.download(version).path, version) if version else (None, None)


def _earlier_champions(
    registry: ModelRegistry, tracker: Any, current: str | None, n: int
) -> tuple[dict[str, Path], list[str]]:
    """Verified copies of the champions before ``current`` (so at most n - 1 of them), newest first, and the
    versions the registry no longer holds (gc keeps only the newest and the released ones): said in the log."""
    from forkcast_registry.errors import VersionNotFoundError

    found: dict[str, Path] = {}
    gone: list[str] = []
    for version in tracker.recent_champions(n):
        if version == current or len(found) + 1 >= n:
            continue
        try:
            found[version] = registry.download(version).path
        except VersionNotFoundError:
            gone.append(version)
    return found, gone


def run_release_command(args: argparse.Namespace) -> int:
    # MLflow is imported here, not at module level: it adds about a second to every other subcommand's start.
    from mlflow.exceptions import MlflowException

    from forkcast_retrain.publish import run_publish
    from forkcast_retrain.tracking import CHAMPION, Tracker

    if args.command in GITOPS_COMMANDS:
        return run_gitops_command(args)
    try:
        if args.command == "export":
            export_release(args.out, args.to)
            print(f"version files of {args.out} written to {args.to}")
            return 0
        registry = ModelRegistry.from_settings(RegistrySettings())
        if args.command == "publish":
            published = run_publish(args.out, registry, Tracker.from_env(), create_bucket=args.create_bucket)
            print(json.dumps(published.__dict__, indent=2))
        elif args.command == "gate":
            from forkcast_retrain.gate import gate_values, run_gate

            tracker = Tracker.from_env()
            champion_dir, champion_version = _champion(args.champion, registry, tracker, CHAMPION)
            alert = triggering_alert(args.out)
            earlier: dict[str, Path] = {}
            if args.champion == "auto":
                earlier, gone = _earlier_champions(registry, tracker, champion_version, args.recent_champions)
                for version in gone:
                    print(f"earlier champion {version} is no longer in the registry: not measured against")
            t = GateThresholds(
                args.auc_floor,
                args.auc_epsilon,
                args.logloss_margin,
                accuracy_floor=args.accuracy_floor,
                recent_champions=args.recent_champions,
                psi_max=args.psi_max,
                allow_drift=args.allow_drift or alert is not None,
                allow_drift_reason="--allow-drift"
                if args.allow_drift
                else f"retraining triggered by {alert}",
            )
            report = run_gate(args.out, champion_dir, champion_version, t, earlier)
            run_id = tracker.ensure_run(args.out)
            tracker.log_gate(
                run_id,
                report.passed,
                gate_values(report),
                [args.out / "gate_report.json", args.out / "gate_report.md"],
            )
            print((args.out / "gate_report.md").read_text())
            return 0 if report.passed else 1
        elif args.command == "promote":
            # No alias moves here: `champion` follows the prod overlay once its merge request is merged
            # (`sync-champion`, a job on the main branch), never on a proposal nobody approved yet.
            result = promote(registry, args.repo, args.overlay, _required(args.version), args.branch)
            print(result.message)
            if result.changed and args.push:
                target = args.branch or args.target_branch
                pushed = push_with_retry(
                    args.repo, args.remote, target, push_options=args.push_option, attempts=args.push_attempts
                )
                print(f"pushed {pushed.commit[:10]} to {args.remote} {target} (attempt {pushed.attempts})")
    except (DataError, RegistryError, FileNotFoundError) as exc:
        print(f"forkcast-retrain {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except MlflowException as exc:
        first = str(exc).splitlines()[0][:300]
        where = f" in {args.out}" if getattr(args, "out", None) else ""
        print(
            f"forkcast-retrain {args.command}: error: MLflow failed ({exc.error_code}): {first}\n"
            f"Nothing was lost: the run directory{where} holds what MLflow is sent. Run `forkcast-retrain "
            f"{args.command}` again once MLflow answers; it creates the MLflow run from those files.",
            file=sys.stderr,
        )
        return 2
    return 0


def export_release(run_dir: Path, target: Path) -> None:
    """Copy the files a published version would hold into ``target`` (created if missing)."""
    from forkcast_retrain.publish import release_files

    target.mkdir(parents=True, exist_ok=True)
    for name, path in release_files(run_dir).items():
        shutil.copyfile(path, target / name)


def _required(version: str | None) -> str:
    if not version:
        raise DataError("--version is required")
    return version
