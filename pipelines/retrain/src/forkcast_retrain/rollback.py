"""rollback: undo exactly the release whose canary Argo Rollouts aborted, in Git first, then in MLflow.

The abort notification (deploy/argo-rollouts/notification-configmap.yaml) names the Rollout, its revision, the
model version on the aborted pod template (annotation forkcast.io/model-version, set by
manifests/components/model-release) and the inference image it ran. That pair (model version, image) is what the
overlay in Git deployed; the release to undo is the newest commit on the branch's first-parent history after which
the overlay holds that pair and before which it did not. Found by file content, not by a commit message, it is
the same for a direct push, a merge commit and a squash-merged prod merge request.

Order (issue 15 point 4): refuse when the overlay no longer holds the aborted pair (Git has moved on: a newer
release or a rollback already landed, and reverting would undo the wrong thing); restore the parts that commit
changed (the release file, the images it re-pinned) to their previous content; push, retrying on a rejection
(fetch, rebase, recheck); and only after the push, move the MLflow aliases, retried. A failed alias move after a
successful push is reported (exit 3), never a reason to leave Git unreverted.
"""

from __future__ import annotations

import json
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
ROLLBACK_TAG = "forkcast.rolled_back"  # MLflow model version tag: where and why its canary was aborted


class MovedOnError(DataError):
    """The overlay in Git no longer holds the aborted release: nothing is reverted."""


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


def find_release_commit(repo: Path, aborted: AbortedRelease) -> str:
    """The commit that made the overlay deploy the aborted release (content-based; see the module docstring)."""
    head = state_at(repo, "HEAD", aborted.overlay)
    if head.release_text is None:
        raise DataError(f"no overlay {aborted.overlay!r} in {repo}")
    if not head.holds(aborted):
        raise MovedOnError(
            f"Git has moved on: the {aborted.overlay} overlay now releases model {head.model_version or 'none'}"
            f" (image {head.image()}), not the aborted {aborted.describe()}; nothing reverted. A newer release or"
            " a rollback already landed: check the Rollout and the branch history by hand."
        )
    release, kustomization = _rel(repo, aborted.overlay)
    log = git(repo, "log", "--first-parent", "--format=%H", "HEAD", "--", release, kustomization)
    for commit in log.splitlines():
        parents = git(repo, "rev-list", "--parents", "-n", "1", commit).split()[1:]
        if not parents:
            break
        if not state_at(repo, parents[0], aborted.overlay).holds(aborted):
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
    (the alias the next gate compares against stays ``champion``, which dev never moves).
    """
    from forkcast_retrain.tracking import CHALLENGER, CHAMPION, with_retries

    note = json.dumps(
        {"overlay": aborted.overlay, "rollout": aborted.describe(), "reverted": result.reverted}
    )
    steps: list[tuple[str, Callable[[], bool]]] = []
    if aborted.model_version and aborted.model_version != result.previous_version:
        steps.append(
            (
                f"tagged {aborted.model_version} {ROLLBACK_TAG}",
                lambda: tracker.tag_version(aborted.model_version, ROLLBACK_TAG, note),
            )
        )
        steps.append(
            (
                f"{CHALLENGER} removed from {aborted.model_version}",
                lambda: tracker.clear_alias_if(CHALLENGER, aborted.model_version),
            )
        )
    if aborted.overlay == "prod":
        steps.append(
            (
                f"{CHAMPION} -> {result.previous_version}",
                lambda: tracker.set_alias(CHAMPION, result.previous_version),
            )
        )
    for what, action in steps:
        try:
            if with_retries(action, f"MLflow: {what}", attempts=attempts, delay_s=delay_s, log=log):
                result.aliases.append(what)
        except Exception as exc:  # any MLflow/transport failure: reported, Git stays reverted
            first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            result.alias_error = f"{what}: {first} (after {attempts} attempts)"
            break
    return result
