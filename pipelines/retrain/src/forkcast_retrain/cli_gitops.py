"""The GitOps subcommands of ``forkcast-retrain``: rollback, set-images, wait-rollout, sync-champion (issue 15).

Each one is a step of `.gitlab-ci.yml` that changes or reads what Argo CD deploys: rollback reverts the release an
aborted canary names, set-images pins image digests into an overlay, wait-rollout confirms the dev Rollout reached
100 % before the prod merge request opens, sync-champion moves the MLflow ``champion`` alias to what prod runs.
Secrets come from the environment only (GITOPS remote URL in the clone, FORKCAST_ARGOCD_TOKEN), never argv.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from forkcast_retrain.errors import DataError

GITOPS_COMMANDS = ("rollback", "set-images", "wait-rollout", "sync-champion")
EXIT_ALIASES_NOT_MOVED = 3  # Git holds the change; MLflow could not be updated (retried); see the message


def _add_push(p: argparse.ArgumentParser, default_branch: str | None = "main") -> None:
    p.add_argument(
        "--repo", type=Path, default=Path.cwd(), help="the Git clone holding manifests/ (default .)"
    )
    p.add_argument("--remote", default="origin", help="remote to push to (default origin)")
    p.add_argument("--target-branch", default=default_branch, help="branch to push to (default main)")
    p.add_argument("--no-push", action="store_true", help="commit only; do not push")
    p.add_argument(
        "--push-option",
        action="append",
        default=[],
        help="git push option, repeatable (GitLab: ci.skip, merge_request.create, ...)",
    )
    p.add_argument(
        "--push-attempts",
        type=int,
        default=5,
        help="pushes before giving up; each rejection fetches and rebases",
    )


def add_gitops_commands(sub: Any) -> None:
    p = sub.add_parser(
        "rollback",
        help="revert exactly the release an aborted canary ran (Git first, then MLflow aliases)",
        description="Finds the commit that made the overlay deploy the aborted model version and image, refuses "
        "when the overlay no longer holds it, restores what that commit changed, pushes (retried on rejection), "
        "then moves MLflow aliases (retried). Either --app (CI: Argo CD says which Rollouts are aborted and what "
        "their template carries) or --overlay with --model-version (by hand). Exit 0: reverted, already reverted "
        f"or nothing aborted; 2: nothing changed (refused); {EXIT_ALIASES_NOT_MOVED}: pushed, MLflow not updated.",
    )
    p.add_argument(
        "--app",
        action="append",
        default=[],
        help="Argo CD Application to ask (repeatable): its Rollout, if aborted, names the release to revert",
    )
    p.add_argument("--overlay", help="by hand: kustomize overlay under manifests/overlays/ (dev, prod)")
    p.add_argument(
        "--model-version", help="by hand: the aborted template's forkcast.io/model-version annotation"
    )
    p.add_argument(
        "--image", help="by hand: the aborted template's inference image (name@digest), when known"
    )
    p.add_argument(
        "--namespace", default="", help="by hand: the Rollout's namespace (for the commit message)"
    )
    p.add_argument("--rollout", default="inference", help="the Rollout's name (default inference)")
    p.add_argument("--revision", default="", help="by hand: the Rollout's rollout.argoproj.io/revision")
    _add_push(p)

    p = sub.add_parser(
        "set-images",
        help="pin an overlay's images to registry digests (kustomize images: newName + digest) and commit",
    )
    p.add_argument("--overlay", required=True, help="the overlay whose kustomization.yaml is edited")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--digests", type=Path, help="directory of <image>.digest files (kaniko --digest-file)")
    src.add_argument("--from-overlay", help="copy the digest-pinned images of this overlay (prod from dev)")
    p.add_argument(
        "--registry",
        help="with --digests: the registry path the images were pushed under (default: each image's newName in the "
        "overlay)",
    )
    p.add_argument(
        "--ci-file",
        type=Path,
        help="with --digests: also pin the retrain image this CI file (relative to --repo; .gitlab-ci.yml) runs its "
        "secret-holding jobs in to the digest built for it, in the same commit",
    )
    p.add_argument(
        "--workflow-template",
        type=Path,
        help="with --ci-file: also pin the default image parameter of this Argo WorkflowTemplate (relative to "
        "--repo; workflows/workflowtemplate.yaml) to the same digest, in the same commit; both must name the "
        "same repository",
    )
    p.add_argument("--commit", action="store_true", help="commit the change (and push unless --no-push)")
    p.add_argument("--branch", help="commit on this new branch (a merge request) instead of the current one")
    _add_push(p)

    p = sub.add_parser(
        "wait-rollout",
        help="wait until the Rollout runs the expected release at 100 %% (Argo CD API); exit 1 if it fails",
    )
    p.add_argument("--app", required=True, help="Argo CD Application (forkcast-dev)")
    p.add_argument("--namespace", required=True, help="namespace of the Rollout (forkcast-dev)")
    p.add_argument("--rollout", default="inference", help="Rollout name (default inference)")
    p.add_argument("--model-version", help="expected forkcast.io/model-version on the pod template")
    p.add_argument("--image", help="expected inference image (name@digest) on the pod template")
    p.add_argument(
        "--workload",
        action="append",
        default=[],
        help="with --digests: KIND/NAME=IMAGE (Rollout/inference=forkcast-inference, Deployment/gateway="
        "forkcast-gateway), repeatable: each must run the digest built for IMAGE, at 100 %%",
    )
    p.add_argument(
        "--digests", type=Path, help="directory of <image>.digest files (the build jobs' artifacts)"
    )
    p.add_argument(
        "--repo",
        type=Path,
        default=Path.cwd(),
        help="with --digests: the checkout whose overlay names the images",
    )
    p.add_argument("--overlay", default="dev", help="with --digests: the overlay pinned (default dev)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds before giving up (default 3600)")
    p.add_argument("--interval", type=float, default=20, help="seconds between polls (default 20)")

    p = sub.add_parser(
        "sync-champion",
        help="point the MLflow champion alias at the version the overlay releases (run after the prod merge)",
    )
    p.add_argument(
        "--overlay", default="prod", help="the overlay whose release is the champion (default prod)"
    )
    p.add_argument(
        "--repo", type=Path, default=Path.cwd(), help="the checkout holding manifests/ (default .)"
    )
    p.add_argument(
        "--fetch-branch",
        help="read the release file from a fresh fetch of this branch of --remote, not from the checkout (CI: the "
        "default branch, so a retried or late job never moves champion back onto a release rolled back since)",
    )
    p.add_argument("--remote", default="origin", help="with --fetch-branch: the remote (default origin)")
    p.add_argument("--attempts", type=int, default=5, help="MLflow attempts before giving up (default 5)")


def run_gitops_command(args: argparse.Namespace) -> int:
    from mlflow.exceptions import MlflowException

    try:
        if args.command == "rollback":
            return _rollback(args)
        if args.command == "set-images":
            return _set_images(args)
        if args.command == "wait-rollout":
            return _wait_rollout(args)
        return _sync_champion(args)
    except (DataError, ValueError, FileNotFoundError) as exc:
        print(f"forkcast-retrain {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except MlflowException as exc:
        first = str(exc).splitlines()[0][:300]
        print(f"forkcast-retrain {args.command}: error: MLflow failed: {first}", file=sys.stderr)
        return 2


def _rollback(args: argparse.Namespace) -> int:
    from forkcast_retrain.rollback import AbortedRelease, aborted_in
    from forkcast_retrain.rollout_status import ArgoCDSettings

    if args.app and (args.overlay or args.model_version is not None):
        raise DataError("--app asks Argo CD what aborted; do not combine it with --overlay/--model-version")
    if not args.app:
        if not args.overlay or args.model_version is None:
            raise DataError("name the release: --app (ask Argo CD) or --overlay with --model-version")
        aborted = AbortedRelease(
            args.overlay, args.model_version, args.image or None, args.namespace, args.rollout, args.revision
        )
        return _rollback_one(args, aborted)
    argocd = ArgoCDSettings().client()
    codes = []
    for app in args.app:
        found = aborted_in(argocd, app, args.rollout)
        if isinstance(found, str):
            print(found)
            continue
        print(f"Argo CD: {found.describe()} in {app} is aborted; reverting it in the {found.overlay} overlay")
        try:
            codes.append(_rollback_one(args, found))
        except DataError as exc:  # refused for this Application; the others are still looked at
            print(f"forkcast-retrain rollback: error: {app}: {exc}", file=sys.stderr)
            codes.append(2)
    if not codes:
        print("no Rollout of " + ", ".join(args.app) + " is aborted; nothing to do")
    return 2 if 2 in codes else max(codes, default=0)


def _rollback_one(args: argparse.Namespace, aborted: Any) -> int:
    from forkcast_registry.errors import RegistryError
    from forkcast_registry.registry import ModelRegistry
    from forkcast_registry.settings import RegistrySettings
    from forkcast_retrain.rollback import AlreadyRevertedError, move_aliases, rollback_release
    from forkcast_retrain.tracking import Tracker

    try:
        result = rollback_release(
            ModelRegistry.from_settings(RegistrySettings()),
            args.repo,
            aborted,
            remote=args.remote,
            branch=args.target_branch,
            push=not args.no_push,
            push_options=tuple(args.push_option),
            attempts=args.push_attempts,
        )
    except AlreadyRevertedError as exc:  # a second notification for the same abort: done, not refused
        print(f"forkcast-retrain rollback: {exc}")
        return 0
    except RegistryError as exc:
        raise DataError(f"the version to return to does not verify: {exc}") from exc
    try:
        tracker = Tracker.from_env()
    except Exception as exc:  # any failure is reported below; Git is already reverted
        result.alias_error = f"MLflow client: {exc}"
    else:
        move_aliases(tracker, aborted, result)
    print(result.summary())
    if result.alias_error:
        print(
            f"forkcast-retrain rollback: Git is reverted and pushed, but MLflow was not updated: "
            f"{result.alias_error}. Once MLflow answers run `forkcast-retrain sync-champion --overlay prod`"
            " (prod) or move the aliases in the MLflow UI.",
            file=sys.stderr,
        )
        return EXIT_ALIASES_NOT_MOVED
    return 0


def _set_images(args: argparse.Namespace) -> int:
    from forkcast_retrain.gitops import git, push_with_retry
    from forkcast_retrain.images import (
        CI_IMAGE,
        ci_image_repository,
        digest_of,
        kustomization_path,
        pins_for_overlay,
        pins_from_digests,
        pins_from_overlay,
        read_images,
        set_ci_image,
        set_images,
    )

    if args.ci_file is not None and args.digests is None:
        raise DataError("--ci-file needs --digests (the digest the build recorded for the retrain image)")
    if args.workflow_template is not None and args.ci_file is None:
        raise DataError("--workflow-template needs --ci-file (the template runs the image the CI file pins)")
    # The retrain image's files, checked before anything is written: each names the image literally, and all the
    # same repository (a fork that moved one and not the other would pin a digest the other registry lacks).
    ci_files = [f for f in (args.ci_file, args.workflow_template) if f is not None]
    ci_repos = {}
    for ci_file in ci_files:
        if not (args.repo / ci_file).is_file():
            raise DataError(f"{args.repo / ci_file} does not exist")
        try:
            ci_repos[ci_file] = ci_image_repository((args.repo / ci_file).read_text())
        except DataError as error:
            raise DataError(f"{ci_file}: {error}") from error
    if len(set(ci_repos.values())) > 1:
        named = ", ".join(f"{f} from {r}" for f, r in ci_repos.items())
        raise DataError(f"the files run {CI_IMAGE} from different repositories ({named}); pin one repository")
    path = kustomization_path(args.repo, args.overlay)
    text = path.read_text()
    if args.digests is not None and not args.registry:
        pins, skipped = pins_for_overlay(args.digests, text)
    else:
        if args.digests is not None:
            pins = pins_from_digests(args.digests, args.registry)
        else:
            pins = pins_from_overlay(args.repo, args.from_overlay)
        # The overlay's images: list says which images it deploys; a digest for any other (the retrain image,
        # which only CI and Argo Workflows run) is not written into it.
        listed = {str(e["name"]) for e in read_images(text)}
        skipped = [p.name for p in pins if p.name not in listed]
        pins = [p for p in pins if p.name in listed]
    if skipped:
        print(f"{args.overlay} does not deploy {', '.join(skipped)}; not pinned")
    if not pins:
        raise DataError(f"none of the images given is listed in {path}")
    ci_digest = digest_of(args.digests, CI_IMAGE) if args.ci_file is not None else None
    if args.branch:
        git(args.repo, "checkout", "-q", "-b", args.branch)
    changed = []
    if set_images(path, pins):
        changed.append(path)
        for pin in pins:
            print(f"{args.overlay}: {pin.name} -> {pin.ref}")
    else:
        print(f"{args.overlay} already pins {', '.join(p.ref for p in pins)}")
    names = [p.name.removeprefix("forkcast-") for p in pins] if changed else []
    if ci_digest is not None:
        for ci_file in ci_files:
            ci_path = args.repo / ci_file
            if set_ci_image(ci_path, ci_digest):
                changed.append(ci_path)
                print(f"{ci_file}: {CI_IMAGE} -> @{ci_digest}")
            else:
                print(f"{ci_file} already runs {CI_IMAGE}@{ci_digest}")
        if any(p != path for p in changed):
            names.append(CI_IMAGE)
    if not changed:
        print("nothing to do")
        return 0
    if not args.commit:
        return 0
    rels = [str(p.relative_to(args.repo)) for p in changed]
    git(args.repo, "add", "--", *rels)
    message = f"Release images ({', '.join(names)}) to {args.overlay}"
    git(args.repo, "commit", "-q", "-m", message, "--", *rels)
    if not args.no_push:
        target = args.branch or args.target_branch
        result = push_with_retry(
            args.repo, args.remote, target, push_options=args.push_option, attempts=args.push_attempts
        )
        print(f"pushed {result.commit[:10]} to {args.remote} {target} (attempt {result.attempts})")
    return 0


def _wait_rollout(args: argparse.Namespace) -> int:
    from forkcast_retrain.rollout_status import ArgoCDSettings, Expected, wait_for_rollout, wait_for_workloads

    if args.digests is not None:
        workloads = _workloads(args)
        decision = wait_for_workloads(
            ArgoCDSettings().client(),
            args.app,
            args.namespace,
            workloads,
            timeout_s=args.timeout,
            interval_s=args.interval,
        )
        print(f"{args.namespace}: {decision.outcome}: {decision.reason}")
        return 0 if decision.outcome == "done" else 1
    if args.workload:
        raise DataError("--workload needs --digests (the images to expect)")
    if not args.model_version and not args.image:
        raise DataError("name the release to wait for: --model-version and/or --image, or --digests")
    expected = Expected(args.model_version or None, args.image or None)
    decision = wait_for_rollout(
        ArgoCDSettings().client(),
        args.app,
        args.namespace,
        expected,
        name=args.rollout,
        timeout_s=args.timeout,
        interval_s=args.interval,
    )
    print(f"{args.namespace}/{args.rollout}: {decision.outcome}: {decision.reason}")
    return 0 if decision.outcome == "done" else 1


def _workloads(args: argparse.Namespace) -> list[Any]:
    """--workload KIND/NAME=IMAGE with IMAGE's digest (set-images' own pins: what was written is what is awaited).

    Every pinned image must be awaited by at least one workload, so an image added to the build is not shipped
    unverified."""
    from forkcast_retrain.images import kustomization_path, pins_for_overlay
    from forkcast_retrain.rollout_status import RESOURCE_KINDS, Workload

    pins, _ = pins_for_overlay(args.digests, kustomization_path(args.repo, args.overlay).read_text())
    refs = {p.name: p.ref for p in pins}
    workloads = []
    for spec in args.workload:
        kind_name, _, image = spec.partition("=")
        kind, _, name = kind_name.partition("/")
        if kind not in RESOURCE_KINDS or not name or not image:
            raise DataError(
                f"--workload {spec!r}: expected KIND/NAME=IMAGE, KIND one of {sorted(RESOURCE_KINDS)}"
            )
        if image not in refs:
            raise DataError(f"--workload {spec!r}: no digest of {image} is pinned in {args.overlay}")
        workloads.append(Workload(kind, name, refs[image]))
    unawaited = sorted(set(refs) - {spec.partition("=")[2] for spec in args.workload})
    if unawaited:
        raise DataError(
            f"{', '.join(unawaited)} pinned but no --workload waits for it: it would ship unverified"
        )
    if not workloads:
        raise DataError("--digests needs at least one --workload KIND/NAME=IMAGE")
    return workloads


def _sync_champion(args: argparse.Namespace) -> int:
    from forkcast_retrain.gitops import git, show
    from forkcast_retrain.promote import parse_release, read_release, release_path
    from forkcast_retrain.tracking import CHAMPION, Tracker, with_retries

    path = release_path(args.repo, args.overlay)
    if args.fetch_branch:
        rel = str(path.relative_to(args.repo))
        git(args.repo, "fetch", "--quiet", args.remote, args.fetch_branch)
        text = show(args.repo, "FETCH_HEAD", rel)
        if text is None:
            raise DataError(f"{args.remote} {args.fetch_branch} has no {rel}")
        head = git(args.repo, "rev-parse", "FETCH_HEAD")[:10]
        print(f"{rel} as of {args.remote} {args.fetch_branch} ({head}), not the pipeline's commit")
        version = parse_release(text, f"{args.remote}/{args.fetch_branch}:{rel}").version
    else:
        version = read_release(path).version
    if not version:
        print(f"{args.overlay} releases no model; {CHAMPION} left as it is")
        return 0
    tracker = Tracker.from_env()
    if with_retries(lambda: tracker.alias_version(CHAMPION), f"read {CHAMPION}", args.attempts) == version:
        print(f"MLflow alias {CHAMPION} already -> {version}")
        return 0
    if not with_retries(
        lambda: tracker.set_alias(CHAMPION, version), f"{CHAMPION} -> {version}", args.attempts
    ):
        raise DataError(f"{version} is not registered in MLflow; {CHAMPION} not moved")
    print(f"MLflow alias {CHAMPION} -> {version}")
    return 0
