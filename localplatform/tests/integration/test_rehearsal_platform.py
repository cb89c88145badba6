"""The rehearsal runs on the platform's Redis with the rendered ACL users: a user the manifests lack stops it.

A copy of ``manifests/`` with the ``online-auc`` user removed from the events Redis' ACL (``redis/events.acl``):
``supervisor.up`` starts the render's StatefulSets from that copy, and ``Rehearsal`` checks every process's Redis
credentials as its rendered pod has them before anything else runs, refusing with the workload, the variable and
the user. The gateway's and inference's users, still in the ACL, pass the same check on the same servers.
"""

from __future__ import annotations

import dataclasses
import shutil
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from forkcast_local.config import PlatformConfig, load_config
from forkcast_local.rehearsal.podsets import Release
from forkcast_local.rehearsal.runner import Rehearsal, RehearsalError, Stack, Update, check_redis_credentials
from forkcast_local.rehearsal.spec import load
from forkcast_local.rehearsal.traffic import Traffic
from forkcast_local.supervisor import down, prepare, up

ROOT = Path(__file__).resolve().parents[3]
STATEFUL = {"redis", "redis-events"}


def _without_user(source: Path, acl: str, user: str) -> None:
    path = source / "manifests" / "base" / "redis" / acl
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if not line.startswith(f"user {user} ")]
    assert len(kept) == len(lines) - 1, f"{path} has no line for user {user}"
    path.write_text("".join(kept))


@pytest.fixture
def config(tmp_path: Path) -> Iterator[PlatformConfig]:
    source = tmp_path / "source"
    for folder in ("manifests", "rollouts"):
        shutil.copytree(ROOT / folder, source / folder)
    # The planner finds each container's console script in the workspace: the members as they are, read only.
    shutil.copy2(ROOT / "pyproject.toml", source / "pyproject.toml")
    for member in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]["members"]:
        (source / member).parent.mkdir(parents=True, exist_ok=True)
        (source / member).symlink_to(ROOT / member, target_is_directory=True)
    _without_user(source, "events.acl", "online-auc")
    config = dataclasses.replace(load_config(root=tmp_path / "platform", source=source), ports={})
    try:
        yield config
    finally:
        down(config, log=lambda _line: None)


def test_the_rehearsal_refuses_a_redis_user_the_rendered_acl_lacks(
    config: PlatformConfig, tmp_path: Path
) -> None:
    # As Releases.start does: the StatefulSets run before any release is planned, so the plans hold their ports.
    up(config, log=lambda _line: None, only=STATEFUL)
    platform = prepare(config)
    docs = list(platform.render.docs)
    spec = load(docs)
    release = Release("v1", spec.pod_template, platform.plan("inference"))
    stack = Stack(platform.plan("gateway"), platform.plan("online-auc"), docs, config)
    update = Update(stack, spec, release, release, data=tmp_path, work=tmp_path / "rehearsal", time_scale=30.0,
                    traffic=Traffic())  # fmt: skip
    for workload in ("gateway", "inference"):  # still in the ACL: their rendered credentials are accepted
        check_redis_credentials(platform.plan(workload))
    with pytest.raises(
        RehearsalError,
        match=r"^online-auc: the Redis of FORKCAST_EVENTS_REDIS_URL refuses user 'online-auc' \(.*\): the rendered "
        r"ACL \(manifests/base/redis/\*\.acl\) lacks the user",
    ):
        Rehearsal(update)._platform()
