"""Git operations of the release steps: run git, read a file as of a commit, and push with a bounded retry.

The release steps (promote, rollback, set-images) commit to a fresh clone of the GitOps branch and push. Another
pipeline may push in between (a code release and a model release, or a rollback during a promotion), and then the
push is rejected as non-fast-forward. ``push_with_retry`` fetches, rebases the local commits onto what landed,
re-checks that the change still makes sense (the caller's ``recheck``: a rollback refuses when the overlay moved on)
and pushes again, at most ``attempts`` times, so two pipelines never overwrite each other and never give up on the
first race.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from forkcast_retrain.errors import DataError


def git(repo: Path, *args: str, check: bool = True) -> str:
    """Run ``git args`` in ``repo``; stdout (stripped). A failure raises DataError with git's own message."""
    out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    if check and out.returncode != 0:
        raise DataError(f"git {' '.join(args)} failed: {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout.strip()


def show(repo: Path, commit: str, path: str) -> str | None:
    """The content of ``path`` as of ``commit``; None when the file did not exist there."""
    out = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=repo, capture_output=True, text=True)
    return out.stdout if out.returncode == 0 else None


class PushRejectedError(DataError):
    """The remote refused every attempt (another commit kept landing first, or the remote denies the push)."""


@dataclass(frozen=True)
class PushResult:
    commit: str
    attempts: int


# What git prints when the remote has commits the local branch lacks (a race with another pipeline), as opposed
# to a permission or network failure, which a rebase cannot fix.
_RACE_MARKERS = ("[rejected]", "non-fast-forward", "fetch first", "cannot lock ref", "failed to update ref")


def push_with_retry(
    repo: Path,
    remote: str,
    branch: str,
    *,
    local_ref: str = "HEAD",
    push_options: Sequence[str] = (),
    attempts: int = 5,
    recheck: Callable[[], None] | None = None,
    delay_s: float = 1.0,
    log: Callable[[str], None] = print,
) -> PushResult:
    """Push ``local_ref`` to ``remote``/``branch``; on a rejection fetch, rebase, ``recheck`` and try again.

    ``recheck`` runs after every rebase and raises (DataError) when the rebased change must not be pushed. A
    rebase conflict aborts the rebase and raises: the commit is left unpushed and the job fails loudly.
    """
    options = [f"--push-option={o}" for o in push_options]
    for attempt in range(1, attempts + 1):
        out = subprocess.run(
            ["git", "push", "--porcelain", *options, remote, f"{local_ref}:refs/heads/{branch}"],
            cwd=repo,
            capture_output=True,
            text=True,
        )
        if out.returncode == 0:
            return PushResult(git(repo, "rev-parse", local_ref), attempt)
        message = (out.stderr + out.stdout).strip()
        if not any(marker in message for marker in _RACE_MARKERS):
            raise PushRejectedError(f"push to {remote} {branch} failed (not a race, not retried): {message}")
        if attempt == attempts:
            break
        log(f"push to {remote} {branch} rejected (attempt {attempt}/{attempts}): rebasing onto what landed")
        time.sleep(delay_s * attempt)
        git(repo, "fetch", "--quiet", remote, branch)
        rebase = subprocess.run(
            ["git", "rebase", "--quiet", "FETCH_HEAD"], cwd=repo, capture_output=True, text=True
        )
        if rebase.returncode != 0:
            git(repo, "rebase", "--abort", check=False)
            raise PushRejectedError(
                f"rebasing onto {remote} {branch} conflicts; nothing was pushed: {rebase.stderr.strip()}"
            )
        if recheck is not None:
            recheck()
    raise PushRejectedError(f"push to {remote} {branch} rejected {attempts} times; nothing was pushed")
