"""rollback against real Git repositories (a bare remote in tmp), a real SeaweedFS registry and a real MLflow server.

Each test builds a GitOps history on the bare remote (releases as plain commits, a squash merge without any
trailer, unrelated commits), clones it as the CI job does, and runs the rollback. MLflow outages are real refused
connections: a TCP proxy in front of the real server that is switched off and on.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from forkcast_contract.registry_format import ModelRelease
from forkcast_devservers.servers import Mlflow, Seaweed
from forkcast_registry.publish import build_manifest, new_version_id, publish_version
from forkcast_registry.registry import ModelRegistry
from forkcast_registry.settings import RegistrySettings
from forkcast_retrain.cli import main
from forkcast_retrain.gitops import PushRejectedError
from forkcast_retrain.images import ImagePin, image_ref, kustomization_path, with_images
from forkcast_retrain.promote import read_release, release_path, render_release
from forkcast_retrain.rollback import (
    AbortedRelease,
    AlreadyRevertedError,
    MovedOnError,
    move_aliases,
    rollback_release,
)
from forkcast_retrain.tracking import CHALLENGER, CHAMPION, Tracker

REPO = Path(__file__).resolve().parents[4]
DIGEST_1, DIGEST_2 = "sha256:" + "11" * 32, "sha256:" + "22" * 32


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SeaweedFS + MLflow server of this module's own (forkcast_devservers), in the environment; yields the
    tracking URI."""
    root = tmp_path_factory.mktemp("rollback-stack")
    with Seaweed(root / "seaweed") as seaweed, Mlflow.on(seaweed, root / "mlflow") as mlflow:
        seaweed.create_bucket("forkcast-models")
        env = {
            **seaweed.client_env("forkcast-models"),
            "FORKCAST_MODEL_CACHE": str(root / "cache"),
            "MLFLOW_TRACKING_URI": mlflow.url,
        }
        with pytest.MonkeyPatch.context() as mp:
            for k, v in env.items():
                mp.setenv(k, v)
            yield mlflow.url


@pytest.fixture(scope="module")
def registry(stack: str) -> ModelRegistry:
    return ModelRegistry.from_settings(RegistrySettings())


def _publish(registry: ModelRegistry, tmp: Path, seed: int, register: bool = True) -> ModelRelease:
    """A small real version in S3, registered in MLflow (challenger moves to it, as publish does) if ``register``."""
    out = tmp / f"v{seed}"
    out.mkdir()
    files = {}
    for i, name in enumerate(("model.pt", "scaler.npz", "metrics.json")):
        (out / name).write_bytes(bytes((seed * 31 + i + k) % 256 for k in range(2000)))
        files[name] = out / name
    version = new_version_id(f"data{seed}", "rev", f"rollback{seed}-{time.time_ns()}")
    manifest = build_manifest(
        registry, version, files, data_fingerprint=f"data{seed}", code_revision="rev",
        feature_schema_hash="h", metrics={"roc_auc": 0.8, "accuracy": 0.7, "logloss": 0.5}, gate_passed=True,
    )  # fmt: skip
    digest = publish_version(registry, manifest, files)
    if register:
        tracker = Tracker.from_env()
        run = tracker.client.create_run(tracker._experiment_id())
        tracker.register(run.info.run_id, version, registry.uri(version), {})
    return ModelRelease(
        uri=registry.uri(version),
        version=version,
        model_sha256=manifest.files["model.pt"].sha256,
        manifest_sha256=digest.sha256,
    )


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", *args],
        cwd=repo, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


class GitOps:
    """A bare remote holding the real manifests, and helpers to land commits on it as other pipelines would."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "remote.git"
        _git(root, "init", "-q", "--bare", "--initial-branch=main", str(self.bare))
        self.seed = self.clone(root / "seed")
        for tree in ("manifests", "rollouts"):
            shutil.copytree(REPO / tree, self.seed / tree)
        _git(self.seed, "add", ".")
        _git(self.seed, "commit", "-qm", "seed")
        _git(self.seed, "push", "-q", "origin", "main")

    def clone(self, path: Path) -> Path:
        _git(path.parent, "clone", "-q", str(self.bare), str(path))
        return path

    def land(self, message: str, files: dict[str, str]) -> str:
        """One commit on main with ``files`` (path -> content), pushed: what a (squash) merge leaves."""
        _git(self.seed, "pull", "-q", "--rebase", "origin", "main")
        for rel, text in files.items():
            (self.seed / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.seed / rel).write_text(text)
        _git(self.seed, "add", ".")
        _git(self.seed, "commit", "-qm", message)
        _git(self.seed, "push", "-q", "origin", "main")
        return _git(self.seed, "rev-parse", "HEAD")

    def remote_file(self, rel: str) -> str:
        return _git(self.bare, "show", f"main:{rel}") + "\n"

    def release_file(self, overlay: str) -> str:
        return f"manifests/overlays/{overlay}/model-release.yaml"


@pytest.fixture
def gitops(tmp_path: Path) -> GitOps:
    return GitOps(tmp_path)


def _release(gitops: GitOps, overlay: str, release: ModelRelease, message: str, **extra: str) -> str:
    return gitops.land(message, {gitops.release_file(overlay): render_release(overlay, release), **extra})


def test_reverts_exactly_the_aborted_release_of_a_squash_merge_then_moves_champion(
    gitops: GitOps, registry: ModelRegistry, tmp_path: Path
) -> None:
    a, b = _publish(registry, tmp_path, 1), _publish(registry, tmp_path, 2)
    _release(gitops, "prod", a, "Release A to prod")
    # A squash-merged prod MR: no Forkcast-Release trailer, and a second file changed in the same commit.
    squash = _release(
        gitops, "prod", b, "Merge branch 'release/prod-b' (squashed)", **{"docs/note.md": "x\n"}
    )
    gitops.land("docs only", {"docs/later.md": "y\n"})
    Tracker.from_env().set_alias(CHAMPION, b.version)  # what sync-champion did after the merge
    work = gitops.clone(tmp_path / "ci")
    aborted = AbortedRelease("prod", b.version, None, "forkcast", "inference", "7")
    result = rollback_release(registry, work, aborted, log=lambda _: None)
    assert result.reverted == squash and result.previous_version == a.version and result.push_attempts == 1
    assert read_release(release_path(work, "prod")).version == a.version
    assert gitops.remote_file(gitops.release_file("prod")) == render_release("prod", a)
    assert gitops.remote_file("docs/note.md") == "x\n"  # only the release was reverted, not the whole commit
    body = _git(gitops.bare, "log", "-1", "--format=%B", "main")
    assert f"Reverts: {squash}" in body and "forkcast/inference revision 7" in body
    move_aliases(Tracker.from_env(), aborted, result, delay_s=0, log=lambda _: None)
    assert result.alias_error is None
    assert Tracker.from_env().alias_version(CHAMPION) == a.version


def test_refuses_when_git_has_moved_on(gitops: GitOps, registry: ModelRegistry, tmp_path: Path) -> None:
    a, b, c = (_publish(registry, tmp_path, s) for s in (3, 4, 5))
    for release in (a, b, c):
        _release(gitops, "dev", release, f"Release {release.version} to dev")
    before = _git(gitops.bare, "rev-parse", "main")
    work = gitops.clone(tmp_path / "ci")
    with pytest.raises(MovedOnError, match=f"now releases model {c.version} .image [^)]*., not the aborted"):
        rollback_release(registry, work, AbortedRelease("dev", b.version), log=lambda _: None)
    assert _git(gitops.bare, "rev-parse", "main") == before
    # The CLI says so and exits 2 (nothing changed).
    argv = ["rollback", "--overlay", "dev", "--model-version", b.version, "--repo", str(work)]
    assert main(argv) == 2 and _git(gitops.bare, "rev-parse", "main") == before


def test_a_rejected_push_is_rebased_and_retried(
    gitops: GitOps, registry: ModelRegistry, tmp_path: Path
) -> None:
    a, b = _publish(registry, tmp_path, 6), _publish(registry, tmp_path, 7)
    _release(gitops, "dev", a, "Release A")
    _release(gitops, "dev", b, "Release B")
    work = gitops.clone(tmp_path / "ci")
    other = gitops.land("another pipeline's commit", {"docs/other.md": "z\n"})  # lands after our clone
    logs: list[str] = []
    result = rollback_release(registry, work, AbortedRelease("dev", b.version), delay_s=0, log=logs.append)
    assert result.push_attempts == 2 and "rejected (attempt 1/5)" in logs[0]
    history = _git(gitops.bare, "log", "--format=%H", "main").splitlines()
    assert history[1] == other and history[0] == result.commit
    assert gitops.remote_file(gitops.release_file("dev")) == render_release("dev", a)


def test_a_race_that_moves_the_overlay_is_not_pushed(
    gitops: GitOps, registry: ModelRegistry, tmp_path: Path
) -> None:
    a, b, c = (_publish(registry, tmp_path, s) for s in (8, 9, 10))
    _release(gitops, "dev", a, "Release A")
    _release(gitops, "dev", b, "Release B")
    work = gitops.clone(tmp_path / "ci")
    landed = _release(gitops, "dev", c, "Release C")  # a newer release lands while the rollback runs
    # The rebase of the rollback onto C conflicts on the release file: refused, nothing pushed.
    with pytest.raises(PushRejectedError, match="conflicts; nothing was pushed"):
        rollback_release(registry, work, AbortedRelease("dev", b.version), delay_s=0, log=lambda _: None)
    assert _git(gitops.bare, "rev-parse", "main") == landed


def test_an_image_release_is_reverted_by_its_image_not_the_model(
    gitops: GitOps, registry: ModelRegistry, tmp_path: Path
) -> None:
    a = _publish(registry, tmp_path, 11)
    _release(gitops, "dev", a, "Release A")
    kpath = str(kustomization_path(Path(), "dev"))
    pin = lambda d: with_images(  # noqa: E731
        (gitops.seed / kpath).read_text(), [ImagePin("forkcast-inference", "reg.example/inference", d)]
    )
    gitops.land("images 1", {kpath: pin(DIGEST_1)})
    gitops.land("images 2", {kpath: pin(DIGEST_2)})
    work = gitops.clone(tmp_path / "ci")
    aborted = AbortedRelease("dev", a.version, f"reg.example/inference@{DIGEST_2}")
    result = rollback_release(registry, work, aborted, log=lambda _: None)
    assert result.previous_version == a.version
    assert f"digest: {DIGEST_1}" in gitops.remote_file(kpath) and DIGEST_2 not in gitops.remote_file(kpath)
    assert gitops.remote_file(gitops.release_file("dev")) == render_release("dev", a)


class Proxy:
    """TCP proxy to the real MLflow server; while ``down`` it closes every connection at once (refused)."""

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("http://").split(":")
        self.target, self.down = (host, int(port)), True
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.uri = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            if self.down:
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


@pytest.mark.parametrize("recovers", [True, False], ids=["outage-then-back", "outage-throughout"])
def test_an_mlflow_outage_after_the_push_is_retried_or_reported(
    gitops: GitOps, registry: ModelRegistry, tmp_path: Path, stack: str, monkeypatch: pytest.MonkeyPatch,
    recovers: bool,
) -> None:  # fmt: skip
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    a, b = _publish(registry, tmp_path, 12), _publish(registry, tmp_path, 13)
    _release(gitops, "dev", a, "Release A")
    _release(gitops, "dev", b, "Release B")
    assert Tracker.from_env().alias_version(CHALLENGER) == b.version
    work = gitops.clone(tmp_path / "ci")
    aborted = AbortedRelease("dev", b.version)
    result = rollback_release(registry, work, aborted, log=lambda _: None)
    # Git first: the revert is on the remote before MLflow is touched at all.
    assert gitops.remote_file(gitops.release_file("dev")) == render_release("dev", a)
    proxy = Proxy(stack)
    tracker = Tracker(MlflowClient(tracking_uri=proxy.uri, registry_uri=proxy.uri), proxy.uri)
    logs: list[str] = []

    def log(line: str) -> None:
        logs.append(line)
        if recovers:
            proxy.down = False  # MLflow is back after the first failed attempt

    move_aliases(tracker, aborted, result, attempts=3, delay_s=0, log=log)
    assert "failed (attempt 1/3)" in logs[0]
    if recovers:
        assert result.alias_error is None
        assert Tracker.from_env().alias_version(CHALLENGER) is None  # the aborted challenger lost its alias
    else:
        assert result.alias_error is not None and "(after 3 attempts)" in result.alias_error
        assert Tracker.from_env().alias_version(CHALLENGER) == b.version  # nothing moved, and it says so
        assert "MLflow NOT updated (Git is reverted)" in result.summary()
    proxy.sock.close()


# --- stacked releases, repeated notifications, unregistered versions, Argo CD as the only input -----------------


def _rollback(
    registry: ModelRegistry, gitops: GitOps, tmp_path: Path, aborted: AbortedRelease, name: str
) -> Any:
    return rollback_release(registry, gitops.clone(tmp_path / name), aborted, delay_s=0, log=lambda _: None)


def test_stacked_model_releases_unwind_to_the_first_and_never_flip(
    gitops: GitOps, registry: ModelRegistry, tmp_path: Path
) -> None:
    """v1 stable, v2 lands, v3 lands during v2's canary: abort v3 (back to v2), then abort v2 (back to v1). The
    old walk took the first rollback commit for "the commit that introduced v2" and restored v3."""
    v1, v2, v3 = (_publish(registry, tmp_path, s) for s in (21, 22, 23))
    for release in (v1, v2, v3):
        _release(gitops, "dev", release, f"Release {release.version}")
    first = _rollback(registry, gitops, tmp_path, AbortedRelease("dev", v3.version), "ci1")
    assert first.previous_version == v2.version
    second = _rollback(registry, gitops, tmp_path, AbortedRelease("dev", v2.version), "ci2")
    assert second.previous_version == v1.version, "the second abort flipped back instead of restoring v1"
    assert gitops.remote_file(gitops.release_file("dev")) == render_release("dev", v1)
    body = _git(gitops.bare, "log", "-1", "--format=%B", "main")
    assert f"Reverts: {second.reverted}" in body and second.reverted != first.commit


def test_a_model_then_images_stack_unwinds_to_the_first_release(
    gitops: GitOps, registry: ModelRegistry, tmp_path: Path
) -> None:
    """v1 with image D1 stable, model v2 lands, then images D2 during v2's canary: abort (v2, D2) restores D1,
    abort (v2, D1) restores v1 with D1."""
    kpath = str(kustomization_path(Path(), "dev"))
    pin = lambda d: with_images(  # noqa: E731
        (gitops.seed / kpath).read_text(), [ImagePin("forkcast-inference", "reg.example/inference", d)]
    )
    v1, v2 = _publish(registry, tmp_path, 24), _publish(registry, tmp_path, 25)
    gitops.land("images 1", {kpath: pin(DIGEST_1)})
    _release(gitops, "dev", v1, "Release v1")
    _release(gitops, "dev", v2, "Release v2")
    gitops.land("images 2", {kpath: pin(DIGEST_2)})
    image1, image2 = f"reg.example/inference@{DIGEST_1}", f"reg.example/inference@{DIGEST_2}"
    first = _rollback(registry, gitops, tmp_path, AbortedRelease("dev", v2.version, image2), "ci1")
    assert f"digest: {DIGEST_1}" in gitops.remote_file(kpath) and first.previous_version == v2.version
    _rollback(registry, gitops, tmp_path, AbortedRelease("dev", v2.version, image1), "ci2")
    assert gitops.remote_file(gitops.release_file("dev")) == render_release("dev", v1)
    assert f"digest: {DIGEST_1}" in gitops.remote_file(kpath) and DIGEST_2 not in gitops.remote_file(kpath)


def test_a_second_notification_for_a_reverted_release_is_done_not_refused(
    gitops: GitOps, registry: ModelRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b, c = (_publish(registry, tmp_path, s) for s in (26, 27, 28))
    _release(gitops, "dev", a, "Release A")
    _release(gitops, "dev", b, "Release B")
    done = _rollback(registry, gitops, tmp_path, AbortedRelease("dev", b.version), "ci1")
    work = gitops.clone(tmp_path / "ci2")
    with pytest.raises(AlreadyRevertedError) as caught:
        rollback_release(registry, work, AbortedRelease("dev", b.version), log=lambda _: None)
    assert caught.value.rollback_commit == done.commit
    argv = ["rollback", "--overlay", "dev", "--model-version", b.version, "--repo", str(work)]
    assert main(argv) == 0 and f"already reverted by {done.commit[:10]}" in capsys.readouterr().out
    assert _git(gitops.bare, "rev-parse", "main") == done.commit  # nothing new pushed
    # Twin: the overlay moved on by a newer release (no rollback names B's commit): still refused, exit 2.
    _release(gitops, "dev", b, "Release B again")
    _release(gitops, "dev", c, "Release C")
    again = gitops.clone(tmp_path / "ci3")
    argv = ["rollback", "--overlay", "dev", "--model-version", b.version, "--repo", str(again)]
    assert main(argv) == 2 and "Git has moved on" in capsys.readouterr().err


def test_a_previous_version_missing_from_mlflow_is_an_alias_error_not_success(
    gitops: GitOps, registry: ModelRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """champion cannot go back to a version MLflow never registered: exit 3, champion left on the aborted one."""
    a, b = _publish(registry, tmp_path, 29, register=False), _publish(registry, tmp_path, 30)
    _release(gitops, "prod", a, "Release A to prod")
    _release(gitops, "prod", b, "Release B to prod")
    Tracker.from_env().set_alias(CHAMPION, b.version)
    work = gitops.clone(tmp_path / "ci")
    argv = ["rollback", "--overlay", "prod", "--model-version", b.version, "--repo", str(work)]
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert f"{CHAMPION} -> {a.version}: the version is not registered in MLflow" in err
    assert gitops.remote_file(gitops.release_file("prod")) == render_release("prod", a)  # Git reverted anyway
    assert Tracker.from_env().alias_version(CHAMPION) == b.version


def test_sync_champion_reads_the_default_branch_not_the_pipeline_commit(
    gitops: GitOps, registry: ModelRegistry, tmp_path: Path
) -> None:
    """A late sync-champion of B's merge pipeline, after B was rolled back, keeps champion on A."""
    a, b = _publish(registry, tmp_path, 31), _publish(registry, tmp_path, 32)
    _release(gitops, "prod", a, "Release A to prod")
    _release(gitops, "prod", b, "Release B to prod")
    pipeline = gitops.clone(tmp_path / "pipeline")  # the merge pipeline's checkout: B
    Tracker.from_env().set_alias(CHAMPION, a.version)
    _rollback(registry, gitops, tmp_path, AbortedRelease("prod", b.version), "ci")
    argv = ["sync-champion", "--overlay", "prod", "--repo", str(pipeline)]
    assert main([*argv, "--fetch-branch", "main"]) == 0
    assert Tracker.from_env().alias_version(CHAMPION) == a.version
    # Twin: the checkout alone (the old job) moves champion back onto the rolled-back B.
    assert main(argv) == 0 and Tracker.from_env().alias_version(CHAMPION) == b.version


class StandInArgoCD:
    """Answers the Argo CD calls of `rollback --app`: each Application's spec, and its live Rollout."""

    def __init__(self, apps: dict[str, tuple[str, str, dict[str, Any]]]) -> None:
        self.apps = apps  # app -> (overlay path, namespace, live Rollout)
        self.calls: list[tuple[str, str | None]] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                stand_in.calls.append((url.path, self.headers.get("Authorization")))
                app = url.path.split("/")[4]
                path, namespace, live = stand_in.apps[app]
                if url.path.endswith("/resource"):
                    query = dict(urllib.parse.parse_qsl(url.query))
                    assert query["kind"] == "Rollout" and query["namespace"] == namespace
                    body: dict[str, Any] = {"manifest": json.dumps(live)}
                else:
                    body = {"spec": {"source": {"path": path}, "destination": {"namespace": namespace}}}
                data = json.dumps(body).encode()
                self.send_response(200)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _live(version: str, image: str, aborted: bool, revision: str = "4") -> dict[str, Any]:
    status: dict[str, Any] = {"stableRS": "old", "currentPodHash": "new"}
    if aborted:
        status |= {"abort": True, "conditions": [{"type": "Progressing", "reason": "RolloutAborted"}]}
    return {
        "metadata": {"name": "inference", "annotations": {"rollout.argoproj.io/revision": revision}},
        "spec": {"template": {"metadata": {"annotations": {"forkcast.io/model-version": version}},
                              "spec": {"containers": [{"name": "inference", "image": image}]}}},
        "status": status,
    }  # fmt: skip


def test_rollback_asks_argo_cd_what_aborted_and_reverts_exactly_that(
    gitops: GitOps, registry: ModelRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    a, b = _publish(registry, tmp_path, 33), _publish(registry, tmp_path, 34)
    for overlay in ("dev", "prod"):
        _release(gitops, overlay, a, f"Release A to {overlay}")
    _release(gitops, "dev", b, "Release B to dev")
    work = gitops.clone(tmp_path / "ci")
    image = image_ref(kustomization_path(work, "dev").read_text(), "forkcast-inference")
    assert image is not None
    argocd = StandInArgoCD(
        {
            "forkcast-dev": ("manifests/overlays/dev", "forkcast-dev", _live(b.version, image, aborted=True)),
            "forkcast-prod": ("manifests/overlays/prod", "forkcast", _live(a.version, image, aborted=False)),
        }
    )
    monkeypatch.setenv("FORKCAST_ARGOCD_SERVER", argocd.url)
    monkeypatch.setenv("FORKCAST_ARGOCD_TOKEN", "r3ad")
    argv = ["rollback", "--app", "forkcast-dev", "--app", "forkcast-prod", "--repo", str(work)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "forkcast/inference (forkcast-prod) is not aborted" in out
    assert gitops.remote_file(gitops.release_file("dev")) == render_release("dev", a)
    assert gitops.remote_file(gitops.release_file("prod")) == render_release("prod", a)
    body = _git(gitops.bare, "log", "-1", "--format=%B", "main")
    assert "Rollout forkcast-dev/inference revision 4" in body
    assert {auth for _, auth in argocd.calls} == {"Bearer r3ad"}
    # The second notification of the same abort: Argo CD still shows it aborted, Git already reverted: exit 0.
    head = _git(gitops.bare, "rev-parse", "main")
    assert main(["rollback", "--app", "forkcast-dev", "--repo", str(gitops.clone(tmp_path / "ci2"))]) == 0
    assert "already reverted" in capsys.readouterr().out and _git(gitops.bare, "rev-parse", "main") == head
    # Nothing aborted anywhere: nothing to do, exit 0, no commit.
    argocd.apps["forkcast-dev"] = ("manifests/overlays/dev", "forkcast-dev", _live(a.version, image, False))
    assert main(["rollback", "--app", "forkcast-dev", "--repo", str(gitops.clone(tmp_path / "ci3"))]) == 0
    assert "nothing to do" in capsys.readouterr().out and _git(gitops.bare, "rev-parse", "main") == head
    argocd.server.shutdown()
