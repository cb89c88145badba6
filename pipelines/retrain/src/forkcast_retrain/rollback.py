"""rollback: undo exactly the release whose canary Argo Rollouts aborted, in Git first, then in MLflow.

The abort notification (deploy/argo-rollouts/notification-configmap.yaml) names the Rollout, its revision, the
model version on the aborted pod template (annotation forkcast.io/model-version, set by
manifests/components/model-release) and the inference image it ran. That pair (model version, image) is what the
overlay in Git deployed; the release to undo is the newest commit on the branch's first-parent history after which
the overlay holds that pair and before which it did not. Found by file content, not by a commit message, it is
the same for a direct push, a merge commit and a squash-merged prod merge request.

Earlier rollbacks are not releases: walking back, a rollback commit (one with a ``Reverts: <sha>`` trailer, as this
module writes, or ``This reverts commit <sha>.``, as ``git revert`` writes) is skipped together with the commit it
names. Otherwise, with two releases stacked (v2 landed, v3 landed during v2's canary), aborting v3 and then v2
would find the first rollback as "the commit that introduced v2" and flip v2 and v3 forever; skipping both finds
v2's own commit and restores v1. When the overlay no longer holds the pair because a rollback commit already
reverted the release that introduced it (Argo Rollouts notifies twice for a progress-deadline abort), there is
nothing left to do: ``AlreadyReverted`` is raised, which the CLI reports with exit 0.

Order (issue 15 point 4): refuse when the overlay no longer holds the aborted pair (Git has moved on: a newer
release or a rollback already landed, and reverting would undo the wrong thing); restore the parts that commit
changed (the release file, the images it re-pinned) to their previous content; push, retrying on a rejection
(fetch, rebase, recheck); and only after the push, move the MLflow aliases, retried. A failed alias move after a
successful push is reported (exit 3), never a reason to leave Git unreverted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from forkcast_contract.registry_format import ModelRelease
from forkcast_retrain.errors import DataError
from forkcast_retrain.gitops import git, push_with_retry, show
from forkcast_retrain.images import KUSTOMIZATION, read_images, with_entries
from forkcast_retrain.promote import release_path

INFERENCE_IMAGE = "forkcast-inference"


class MovedOnError(DataError):
    """The overlay in Git no longer holds the aborted release: nothing is reverted."""


class AlreadyRevertedError(MovedOnError):
    """The overlay no longer holds the aborted release because a rollback commit already reverted it: done."""

    def __init__(self, message: str, rollback_commit: str) -> None:
        super().__init__(message)
        self.rollback_commit = rollback_commit


# The trailer this module writes into a rollback commit, and the line `git revert` writes: both name the undone commit.
_REVERTS = re.compile(r"^(?:Reverts: |This reverts commit )([0-9a-f]{40})\.?\s*$", re.MULTILINE)


class Registry(Protocol):
    def download(self, version: str, expected_manifest_sha256: str | None = None) -> Any: ...


class AliasTracker(Protocol):
    def set_alias(self, alias: str, version: str) -> bool: ...
    def clear_alias_if(self, alias: str, version: str) -> bool: ...
    def tag_version(self, version: str, key: str, value: str) -> bool: ...


@dataclass(frozen=True)
class AbortedRelease:
    """What the abort notification says about the pod template that failed its canary."""

    overlay: str
    model_version: str
    image: str | None = None  # the inference container's image; None: identify the release by the model alone
    namespace: str = ""
    rollout: str = "inference"
    revision: str = ""

    def describe(self) -> str:
        where = f"{self.namespace}/{self.rollout}" if self.namespace else self.rollout
        rev = f" revision {self.revision}" if self.revision else ""
        image = f", image {self.image}" if self.image else ""
        return f"Rollout {where}{rev} (model {self.model_version or 'none'}{image})"


@dataclass(frozen=True)
class OverlayState:
    """The parts of an overlay a release changes, as of one commit."""

    release_text: str | None
    kustomization_text: str | None

    @property
    def model_version(self) -> str | None:
        if self.release_text is None:
            return None
        data = (yaml.safe_load(self.release_text) or {}).get("data") or {}
        return str(data.get("FORKCAST_MODEL_VERSION", ""))

    def images(self) -> dict[str, dict[str, Any]]:
        if self.kustomization_text is None:
            return {}
        return {str(e["name"]): e for e in read_images(self.kustomization_text)}

    def image(self, name: str = INFERENCE_IMAGE) -> str | None:
        entry = self.images().get(name)
        if entry is None:
            return None
        repo = entry.get("newName", name)
        if entry.get("digest"):
            return f"{repo}@{entry['digest']}"
        return f"{repo}:{entry['newTag']}" if entry.get("newTag") else str(repo)

    def holds(self, aborted: AbortedRelease) -> bool:
        if self.model_version != aborted.model_version:
            return False
        return aborted.image is None or self.image() == aborted.image


def _rel(repo: Path, overlay: str) -> tuple[str, str]:
    release = str(release_path(repo, overlay).relative_to(repo))
    return release, str(Path(release).with_name(KUSTOMIZATION))


def state_at(repo: Path, commit: str, overlay: str) -> OverlayState:
    release, kustomization = _rel(repo, overlay)
    return OverlayState(show(repo, commit, release), show(repo, commit, kustomization))


def reverted_by(repo: Path, commit: str) -> str | None:
    """What ``commit`` reverts (its ``Reverts:`` trailer or ``This reverts commit`` line); None if no revert."""
    found = _REVERTS.search(git(repo, "log", "-1", "--format=%B", commit))
    return found.group(1) if found else None


def _first_parent(repo: Path, commit: str) -> str | None:
    parents = git(repo, "rev-list", "--parents", "-n", "1", commit).split()[1:]
    return parents[0] if parents else None


def _history(repo: Path, overlay: str) -> list[str]:
    """Commits on HEAD's first-parent history that touched the overlay's release parts, newest first."""
    release, kustomization = _rel(repo, overlay)
    return git(
        repo, "log", "--first-parent", "--format=%H", "HEAD", "--", release, kustomization
    ).splitlines()


def _introduces(repo: Path, commit: str, aborted: AbortedRelease) -> bool:
    """Whether the overlay holds the aborted pair after ``commit`` and did not before it."""
    parent = _first_parent(repo, commit)
    return (
        parent is not None
        and state_at(repo, commit, aborted.overlay).holds(aborted)
        and not state_at(repo, parent, aborted.overlay).holds(aborted)
    )


def _already_reverted(repo: Path, aborted: AbortedRelease) -> str | None:
    """The rollback commit that reverted the newest release of the aborted pair, if one did.

    Only the newest commit that introduced the pair counts: a release reverted once, released again and then
    replaced by a newer one is a moved-on overlay, not an already-handled abort.
    """
    reverted: dict[str, str] = {}  # release commit -> the rollback commit naming it
    for commit in _history(repo, aborted.overlay):
        target = reverted_by(repo, commit)
        if target is not None:
            reverted.setdefault(target, commit)
            continue
        if _introduces(repo, commit, aborted):
            return reverted.get(commit)
    return None


def find_release_commit(repo: Path, aborted: AbortedRelease) -> str:
    """The commit that made the overlay deploy the aborted release (content-based; see the module docstring)."""
    head = state_at(repo, "HEAD", aborted.overlay)
    if head.release_text is None:
        raise DataError(f"no overlay {aborted.overlay!r} in {repo}")
    if not head.holds(aborted):
        rollback = _already_reverted(repo, aborted)
        if rollback is not None:
            raise AlreadyRevertedError(
                f"{aborted.describe()} was already reverted by {rollback[:10]}; the {aborted.overlay} overlay"
                f" releases model {head.model_version or 'none'} (image {head.image()}); nothing to do",
                rollback,
            )
        raise MovedOnError(
            f"Git has moved on: the {aborted.overlay} overlay now releases model {head.model_version or 'none'}"
            f" (image {head.image()}), not the aborted {aborted.describe()}; nothing reverted. A newer release or"
            " a rollback already landed: check the Rollout and the branch history by hand."
        )
    skipped: set[str] = set()
    for commit in _history(repo, aborted.overlay):
        target = reverted_by(repo, commit)
        if target is not None:  # a rollback is no release: skip it and the release it undid
            skipped.update((commit, target))
            continue
        if commit in skipped:
            continue
        parent = _first_parent(repo, commit)
        if parent is None:
            break
        if not state_at(repo, parent, aborted.overlay).holds(aborted):
            return commit
    raise DataError(
        f"no commit on this branch introduced {aborted.describe()}: the overlay has held it since the first "
        "commit, so there is no earlier release to return to"
    )


@dataclass
class RollbackResult:
    reverted: str  # the release commit undone
    commit: str  # the rollback commit pushed
    previous_version: str
    push_attempts: int
    aliases: list[str] = field(default_factory=list)  # what was done in MLflow
    alias_error: str | None = None  # set when MLflow could not be updated after the push

    def summary(self) -> str:
        lines = [
            f"reverted {self.reverted[:10]} with {self.commit[:10]} (pushed after {self.push_attempts} attempt(s));"
            f" the overlay releases model {self.previous_version} again"
        ]
        lines += [f"MLflow: {a}" for a in self.aliases]
        if self.alias_error:
            lines.append(f"MLflow NOT updated (Git is reverted): {self.alias_error}")
        return "\n".join(lines)


def _restore(repo: Path, aborted: AbortedRelease, commit: str, registry: Registry) -> tuple[str, list[str]]:
    """Write the overlay's parts that ``commit`` changed back to their content before it; returns (version, paths)."""
    parent = git(repo, "rev-parse", f"{commit}^1")
    before, after = state_at(repo, parent, aborted.overlay), state_at(repo, commit, aborted.overlay)
    release, kustomization = _rel(repo, aborted.overlay)
    changed: list[str] = []
    previous = before.model_version or ""
    if before.model_version != after.model_version:
        if not before.release_text or not previous:
            raise DataError(
                f"the release before {commit[:10]} had no model; refusing to roll {aborted.overlay} back to none"
            )
        data = yaml.safe_load(before.release_text)["data"]
        old = ModelRelease.from_env({str(k): str(v) for k, v in data.items()})
        registry.download(previous, old.manifest_sha256)  # the version we return to must still verify
        (repo / release).write_text(before.release_text)
        changed.append(release)
    old_images, new_images = before.images(), after.images()
    # An image the commit newly added has no previous pin to return to; it stays (the template it feeds is new).
    restored = [old_images[n] for n in new_images if n in old_images and old_images[n] != new_images[n]]
    if restored:
        path = repo / kustomization
        path.write_text(with_entries(path.read_text(), restored))
        changed.append(kustomization)
    if not changed:
        raise DataError(f"{commit[:10]} changed neither the model nor an image of {aborted.overlay}")
    return previous, changed


def rollback_release(
    registry: Registry,
    repo: Path,
    aborted: AbortedRelease,
    *,
    remote: str = "origin",
    branch: str = "main",
    push: bool = True,
    push_options: tuple[str, ...] = (),
    attempts: int = 5,
    delay_s: float = 1.0,
    log: Callable[[str], None] = print,
) -> RollbackResult:
    """Revert the aborted release in ``repo`` (a clone of ``branch``), commit it and push it. MLflow: see below."""
    commit = find_release_commit(repo, aborted)
    previous, paths = _restore(repo, aborted, commit, registry)
    subject = f"Roll back {aborted.overlay}: canary of model {aborted.model_version or 'none'} aborted"
    body = (
        f"{aborted.describe()} aborted its canary; the {aborted.overlay} overlay returns to the state before "
        f"{commit[:10]} (model {previous}).\n\nReverts: {commit}\n"
    )
    git(repo, "add", "--", *paths)
    git(repo, "commit", "-q", "-m", f"{subject}\n\n{body}", "--", *paths)
    pushed = git(repo, "rev-parse", "HEAD")
    attempts_used = 0
    if push:

        def recheck() -> None:
            # After a rebase our commit sits on what landed: the overlay below it must still be the aborted one.
            if not state_at(repo, "HEAD~1", aborted.overlay).holds(aborted):
                raise MovedOnError(
                    f"while pushing, Git moved on (the {aborted.overlay} overlay changed under the rollback);"
                    " nothing was pushed"
                )

        result = push_with_retry(
            repo,
            remote,
            branch,
            push_options=push_options,
            attempts=attempts,
            recheck=recheck,
            delay_s=delay_s,
            log=log,
        )
        pushed, attempts_used = result.commit, result.attempts
    return RollbackResult(commit, pushed, previous, attempts_used)


def move_aliases(
    tracker: AliasTracker,
    aborted: AbortedRelease,
    result: RollbackResult,
    *,
    attempts: int = 5,
    delay_s: float = 2.0,
    log: Callable[[str], None] = print,
) -> RollbackResult:
    """After the push: tag the aborted version, and put the aliases back (retried; a failure is recorded).

    prod: ``champion`` returns to the version prod runs again. dev: the aborted version loses ``challenger``
    (the alias the next gate compares against stays ``champion``, which dev never moves). An action that answers
    False for a version MLflow does not know (tag or champion: "never registered") is an alias error like an
    outage, not a success: champion would still point at the aborted version. ``challenger`` already elsewhere is
    fine (nothing to remove).
    """
    from forkcast_retrain.tracking import CHALLENGER, CHAMPION, ROLLED_BACK_TAG, with_retries

    note = json.dumps(
        {"overlay": aborted.overlay, "rollout": aborted.describe(), "reverted": result.reverted}
    )
    # (what, action, whether False is an error)
    steps: list[tuple[str, Callable[[], bool], bool]] = []
    if aborted.model_version and aborted.model_version != result.previous_version:
        steps.append(
            (
                f"tagged {aborted.model_version} {ROLLED_BACK_TAG}",
                lambda: tracker.tag_version(aborted.model_version, ROLLED_BACK_TAG, note),
                True,
            )
        )
        steps.append(
            (
                f"{CHALLENGER} removed from {aborted.model_version}",
                lambda: tracker.clear_alias_if(CHALLENGER, aborted.model_version),
                False,
            )
        )
    if aborted.overlay == "prod":
        steps.append(
            (
                f"{CHAMPION} -> {result.previous_version}",
                lambda: tracker.set_alias(CHAMPION, result.previous_version),
                True,
            )
        )
    errors: list[str] = []
    for what, action, false_is_error in steps:
        try:
            done = with_retries(action, f"MLflow: {what}", attempts=attempts, delay_s=delay_s, log=log)
        except Exception as exc:  # any MLflow/transport failure: reported, Git stays reverted
            first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            errors.append(f"{what}: {first} (after {attempts} attempts)")
            break  # MLflow does not answer: the next steps would only wait out their retries too
        if done:
            result.aliases.append(what)
        elif false_is_error:
            errors.append(f"{what}: the version is not registered in MLflow")
    result.alias_error = "; ".join(errors) or None
    return result


OVERLAY_PATH = "manifests/overlays/"


def aborted_in(argocd: ArgoCDReader, app: str, rollout: str = "inference") -> AbortedRelease | str:
    """What Argo CD says about ``app``'s Rollout: the release its aborted template carries, or why there is none.

    The rollback pipeline carries no variables (anyone able to set them could steer a job that holds the GitOps
    token); everything it reverts comes from here. The overlay and namespace are the Application's own
    (spec.source.path, spec.destination.namespace); the release is the Rollout's desired pod template: the
    forkcast.io/model-version annotation and the inference container's image.
    """
    from forkcast_retrain.rollout_status import aborted, template_release

    spec = argocd.application(app).get("spec") or {}
    path = str((spec.get("source") or {}).get("path", "")).strip("/")
    namespace = str((spec.get("destination") or {}).get("namespace", ""))
    if not path.startswith(OVERLAY_PATH) or not namespace:
        raise DataError(f"Argo CD Application {app} does not deploy an overlay of {OVERLAY_PATH} ({path!r})")
    overlay = path.removeprefix(OVERLAY_PATH)
    live = argocd.rollout(app, namespace, rollout)
    if not aborted(live):
        return f"{namespace}/{rollout} ({app}) is not aborted; nothing to roll back"
    version, image = template_release(live)
    revision = (live.get("metadata", {}).get("annotations") or {}).get("rollout.argoproj.io/revision", "")
    return AbortedRelease(overlay, version or "", image or None, namespace, rollout, str(revision))


class ArgoCDReader(Protocol):
    def application(self, app: str) -> dict[str, Any]: ...
    def rollout(self, app: str, namespace: str, name: str) -> dict[str, Any]: ...
