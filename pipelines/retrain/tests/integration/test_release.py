"""gate, publish and promote against a real SeaweedFS and a real MLflow server (sqlite, artifacts on the same S3).

The runs are trained in-process on the tiny preset: a good champion, a worse one (the original lr-1e-8 recipe),
one trained on drifted data, and a degenerate (constant) model made from the champion.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from forkcast_delivery.render import render_text

from forkcast_contract.model_format import METRICS_FILE, MODEL_FILE
from forkcast_contract.registry_format import PROBE_FILE, PROBE_TOLERANCE, SCALER_FILE, SERVING_WEIGHTS_FILE
from forkcast_data.generate import GenerateRequest, generate
from forkcast_data.presets import preset_sizes
from forkcast_devservers.ports import free_port
from forkcast_devservers.servers import Mlflow, Seaweed
from forkcast_registry.errors import VersionNotFoundError
from forkcast_registry.registry import ModelRegistry
from forkcast_registry.settings import RegistrySettings
from forkcast_retrain.cli import main
from forkcast_retrain.errors import DataError
from forkcast_retrain.evaluate import run_evaluate
from forkcast_retrain.gate_policy import TRIGGER_FILE
from forkcast_retrain.model import RankNet
from forkcast_retrain.prep import run_prep
from forkcast_retrain.promote import promote, read_release, release_path
from forkcast_retrain.publish import run_publish
from forkcast_retrain.recipes import RECIPES
from forkcast_retrain.serving_form import numpy_forward
from forkcast_retrain.tracking import CHALLENGER, CHAMPION, REGISTERED_MODEL, Tracker
from forkcast_retrain.train import TrainOptions, run_train

REPO = Path(__file__).resolve().parents[4]


def _train(data: Path, out: Path, recipe: str, epochs: int) -> Path:
    run_prep(data, out)
    opts = TrainOptions(recipe=RECIPES[recipe].with_overrides(epochs=epochs), threads=1, progress=False)
    run_train(out, opts, log=lambda _: None)
    run_evaluate(out, log=lambda _: None)
    return out


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """SeaweedFS + MLflow server of this module's own (forkcast_devservers: its registered model and aliases are
    this module's); the environment the CLI needs; both stopped by PID."""
    root = tmp_path_factory.mktemp("stack")
    with Seaweed(root / "seaweed") as seaweed, Mlflow.on(seaweed, root / "mlflow") as mlflow:
        env = {
            **seaweed.client_env("forkcast-models"),
            "FORKCAST_MODEL_CACHE": str(root / "cache"),
            "MLFLOW_TRACKING_URI": mlflow.url,
        }
        with pytest.MonkeyPatch.context() as mp:
            for k, v in env.items():
                mp.setenv(k, v)
            yield env


@pytest.fixture(scope="module")
def runs(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    drifted = root / "drift-data"
    generate(
        GenerateRequest(out=drifted, preset="tiny", sizes=preset_sizes("tiny"), drift=1.0, progress=False),
        log=lambda _: None,
    )
    good = _train(tiny_data, root / "champion", "default", 2)
    degenerate = root / "degenerate"
    shutil.copytree(good, degenerate)
    dead = RankNet()
    with torch.no_grad():
        dead.net[3].weight.zero_()
    torch.jit.script(dead).save(str(degenerate / MODEL_FILE))
    return {
        "champion": good,
        "worse": _train(tiny_data, root / "worse", "original", 1),
        "drift": _train(drifted, root / "drift", "default", 2),
        "degenerate": degenerate,
    }


@pytest.fixture(scope="module")
def registry(stack: dict[str, str]) -> ModelRegistry:
    return ModelRegistry.from_settings(RegistrySettings())


@pytest.fixture(scope="module")
def git_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway Git repo holding a copy of the real manifests (the overlays render the base and rollouts/)."""
    repo = tmp_path_factory.mktemp("gitops")
    for tree in ("manifests", "rollouts"):
        shutil.copytree(REPO / tree, repo / tree)
    for args in (
        ["init", "-q", "-b", "main"],
        ["config", "user.email", "ci@forkcast.test"],
        ["config", "user.name", "forkcast ci"],
        ["add", "."],
        ["commit", "-q", "-m", "overlays"],
    ):
        subprocess.run(["git", *args], cwd=repo, check=True)
    return repo


@pytest.fixture(scope="module")
def champion(stack: dict[str, str], runs: dict[str, Path], registry: ModelRegistry, git_repo: Path) -> str:
    """The good run gated (no champion yet), published, promoted to prod and made champion; returns its version."""
    assert main(["gate", "--out", str(runs["champion"]), "--champion", "auto"]) == 0
    assert main(["publish", "--out", str(runs["champion"]), "--create-bucket"]) == 0
    version = registry.list_versions()[-1]
    assert main(["promote", "--version", version, "--overlay", "prod", "--repo", str(git_repo)]) == 0
    # Proposing a release moves no alias: champion follows the prod overlay once it is merged (sync-champion).
    assert Tracker.from_env().alias_version(CHAMPION) is None
    assert main(["sync-champion", "--overlay", "prod", "--repo", str(git_repo)]) == 0
    return version


def test_publish_stores_a_verified_version_with_a_serving_form(
    champion: str, registry: ModelRegistry
) -> None:
    local = registry.download(champion)
    assert local.manifest.gate_passed is True
    assert {MODEL_FILE, SCALER_FILE, METRICS_FILE, SERVING_WEIGHTS_FILE, PROBE_FILE} <= set(
        local.manifest.files
    )
    weights = dict(np.load(local.file(SERVING_WEIGHTS_FILE)))
    probe = np.load(local.file(PROBE_FILE))
    scaler = np.load(local.file(SCALER_FILE))
    x_std = (probe["inputs"] - scaler["mean"]) / scaler["std"]
    assert np.abs(numpy_forward(weights, x_std) - probe["scores"]).max() <= PROBE_TOLERANCE
    assert probe["scores"].std() > 0.1


def test_publish_registers_an_mlflow_version_with_tags_and_challenger(
    champion: str, registry: ModelRegistry, runs: dict[str, Path]
) -> None:
    tracker = Tracker.from_env()
    mv = tracker.client.get_model_version_by_alias(REGISTERED_MODEL, CHALLENGER)
    local = registry.download(champion)
    assert mv.tags["s3_uri"] == registry.uri(champion)
    assert mv.tags["model_sha256"] == local.manifest.files[MODEL_FILE].sha256
    assert mv.tags["data_fingerprint"] == local.manifest.data_fingerprint
    assert mv.tags["code_revision"] == local.manifest.code_revision
    history = tracker.client.get_metric_history(mv.run_id, "test_roc_auc")
    assert [m.step for m in history] == [1, 2]
    run = tracker.client.get_run(mv.run_id)
    assert run.data.tags["gate"] == "passed"
    assert run.data.params["lr"] and "model" in {a.path for a in tracker.client.list_artifacts(mv.run_id)}


def test_promote_writes_the_release_file_commits_and_champion_follows_only_sync_champion(
    champion: str, registry: ModelRegistry, git_repo: Path
) -> None:
    release = read_release(release_path(git_repo, "prod"))
    assert release.uri == registry.uri(champion) and release.version == champion
    assert release.manifest_sha256 == registry.download(champion).manifest_sha256
    changed = subprocess.run(
        ["git", "show", "--name-only", "--format=%B", "HEAD"],
        cwd=git_repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"Release model {champion} to prod" in changed and "roc_auc=" in changed
    assert changed.strip().endswith("manifests/overlays/prod/model-release.yaml")
    assert Tracker.from_env().alias_version(CHAMPION) == champion  # moved by sync-champion, in the fixture
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=git_repo, capture_output=True, text=True).stdout
    assert main(["promote", "--version", champion, "--overlay", "prod", "--repo", str(git_repo)]) == 0
    assert (
        subprocess.run(["git", "rev-parse", "HEAD"], cwd=git_repo, capture_output=True, text=True).stdout
        == head
    )


def test_kustomize_renders_the_promoted_uri(champion: str, registry: ModelRegistry, git_repo: Path) -> None:
    out = render_text(git_repo / "manifests/overlays/prod")  # kubectl from the venv: never skipped
    assert f"FORKCAST_MODEL_URI: {registry.uri(champion)}" in out


def test_repository_release_files_are_valid(tmp_path: Path) -> None:
    for overlay in ("dev", "prod"):
        release = read_release(release_path(REPO, overlay))
        assert release.uri == "" or release.uri.startswith("s3://")


def test_gate_fails_a_worse_model(champion: str, runs: dict[str, Path]) -> None:
    assert main(["gate", "--out", str(runs["worse"])]) == 1
    report = (runs["worse"] / "gate_report.md").read_text()
    assert "FAILED" in report and "| auc_vs_champion | FAIL" in report
    with pytest.raises(DataError, match="gate failed"):
        run_publish(runs["worse"], ModelRegistry.from_settings(RegistrySettings()), None)


def test_gate_fails_a_degenerate_model(champion: str, runs: dict[str, Path]) -> None:
    assert main(["gate", "--out", str(runs["degenerate"]), "--champion", "none", "--auc-floor", "0"]) == 1
    assert "| probe | FAIL" in (runs["degenerate"] / "gate_report.md").read_text()


def test_gate_fails_drifted_data_unless_allowed(champion: str, runs: dict[str, Path]) -> None:
    assert main(["gate", "--out", str(runs["drift"])]) == 1
    assert "| drift_psi | FAIL" in (runs["drift"] / "gate_report.md").read_text()
    assert main(["gate", "--out", str(runs["drift"]), "--allow-drift"]) == 0
    assert "| drift_psi | pass | max PSI" in (runs["drift"] / "gate_report.md").read_text()


def test_gate_allows_drift_when_an_alert_asked_for_the_run(champion: str, runs: dict[str, Path]) -> None:
    """The retrain an OnlineAucLow/FeatureDriftHigh alert triggered trains on drifted data by definition.

    (Which records count as such a trigger: ../unit/test_gate_policy.py; without one the same run fails, above.)
    """
    trigger = runs["drift"] / TRIGGER_FILE
    record = {"CI_PIPELINE_SOURCE": "trigger", "alert_name": "OnlineAucLow", "alert_reason": "AUC 0.61"}
    trigger.write_text(json.dumps(record))
    try:
        assert main(["gate", "--out", str(runs["drift"])]) == 0
        report = (runs["drift"] / "gate_report.md").read_text()
        assert (
            "| drift_psi | pass |" in report and "(allowed: retraining triggered by OnlineAucLow)" in report
        )
    finally:
        trigger.unlink()


def test_promote_refuses_unknown_version_and_rollback_reverts_the_aborted_one(
    champion: str, runs: dict[str, Path], registry: ModelRegistry, git_repo: Path
) -> None:
    before = release_path(git_repo, "prod").read_text()
    with pytest.raises(VersionNotFoundError):
        registry.download("20990101T000000Z-00000000")
    assert (
        main(
            [
                "promote",
                "--version",
                "20990101T000000Z-00000000",
                "--overlay",
                "prod",
                "--repo",
                str(git_repo),
            ]
        )
        == 2
    )
    assert release_path(git_repo, "prod").read_text() == before

    assert main(["gate", "--out", str(runs["drift"]), "--allow-drift"]) == 0
    assert main(["publish", "--out", str(runs["drift"])]) == 0
    second = registry.list_versions()[-1]
    assert second != champion
    assert main(["promote", "--version", second, "--overlay", "prod", "--repo", str(git_repo)]) == 0
    assert read_release(release_path(git_repo, "prod")).version == second
    # The canary of `second` aborts: rollback (no remote here: --no-push) returns prod and champion to it.
    argv = ["rollback", "--overlay", "prod", "--model-version", second, "--repo", str(git_repo), "--no-push"]
    assert main(argv) == 0
    assert read_release(release_path(git_repo, "prod")).version == champion
    assert Tracker.from_env().alias_version(CHAMPION) == champion


def test_publish_refuses_bad_artifacts(runs: dict[str, Path], tmp_path: Path, stack: dict[str, str]) -> None:
    registry = ModelRegistry.from_settings(RegistrySettings())
    before = registry.list_versions()
    bad = tmp_path / "bad"
    shutil.copytree(runs["champion"], bad, ignore=shutil.ignore_patterns("gate_report.*", "mlflow_run.json"))
    (bad / MODEL_FILE).write_bytes(b"not torchscript")
    with pytest.raises(DataError, match="not a TorchScript"):
        run_publish(bad, registry, None)
    shutil.copy(runs["champion"] / MODEL_FILE, bad / MODEL_FILE)
    (bad / METRICS_FILE).write_text('{"roc_auc": 0.9}')
    with pytest.raises(DataError, match="lacks required fields"):
        run_publish(bad, registry, None)
    assert registry.list_versions() == before


def test_without_a_tracking_server_a_local_store_is_used_and_said(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    monkeypatch.chdir(tmp_path)
    tracker = Tracker.from_env()
    assert tracker.uri == (tmp_path / "mlruns").as_uri()
    assert "MLFLOW_TRACKING_URI is not set" in capsys.readouterr().err
    experiment = tracker.client.create_experiment("offline")
    run = tracker.client.create_run(experiment)
    tracker.client.log_metric(run.info.run_id, "roc_auc", 0.9)
    assert (tmp_path / "mlruns" / experiment / run.info.run_id / "metrics" / "roc_auc").is_file()


def test_unreachable_tracking_server_fails_fast_and_is_not_taken_for_no_champion(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An MLflow that cannot be reached is an error within seconds (not minutes of retries), never "no champion"."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    run = tmp_path / "run"
    shutil.copytree(runs["champion"], run, ignore=shutil.ignore_patterns("gate_report.*", "mlflow_run.json"))
    t0 = time.monotonic()
    assert main(["gate", "--out", str(run), "--champion", "auto"]) == 2
    assert time.monotonic() - t0 < 15
    err = capsys.readouterr().err
    assert "MLflow failed" in err and "Nothing was lost" in err and not (run / "gate_report.json").exists()


def test_export_writes_the_version_files_without_s3(runs: dict[str, Path], tmp_path: Path) -> None:
    target = tmp_path / "model"
    assert main(["export", "--out", str(runs["champion"]), "--to", str(target)]) == 0
    for name in (MODEL_FILE, SCALER_FILE, METRICS_FILE, SERVING_WEIGHTS_FILE, PROBE_FILE):
        assert (target / name).is_file(), name
    assert (target / MODEL_FILE).read_bytes() == (runs["champion"] / MODEL_FILE).read_bytes()
    assert main(["export", "--out", str(tmp_path / "no-run"), "--to", str(tmp_path / "x")]) == 2


def test_promote_verifies_the_manifest_another_overlay_pinned(
    champion: str, registry: ModelRegistry, git_repo: Path, tmp_path: Path
) -> None:
    """prod (the fixture) pins the champion's manifest; promoting the same version to dev verifies against that
    pin, and a pin that differs (the S3 manifest changed since prod was released) is refused, dev untouched."""
    repo = tmp_path / "gitops"
    shutil.copytree(git_repo, repo)
    dev = release_path(repo, "dev")
    assert main(["promote", "--version", champion, "--overlay", "dev", "--repo", str(repo)]) == 0
    assert read_release(dev).manifest_sha256 == read_release(release_path(repo, "prod")).manifest_sha256
    subprocess.run(["git", "reset", "-q", "--hard", "HEAD~1"], cwd=repo, check=True)
    before = dev.read_text()
    prod = release_path(repo, "prod")
    prod.write_text(prod.read_text().replace(read_release(prod).manifest_sha256, "f" * 64))
    with pytest.raises(
        DataError, match="manifest in the registry is not the one prod pinned \\(ffffffffffff"
    ):
        promote(registry, repo, "dev", champion)
    assert dev.read_text() == before
    # A release file naming a version without its manifest pin is refused where promote reads it.
    prod.write_text(prod.read_text().replace("f" * 64, ""))
    with pytest.raises(DataError, match="is not pinned: FORKCAST_MODEL_MANIFEST_SHA256"):
        promote(registry, repo, "dev", champion)


def test_the_gate_bounds_the_loss_against_the_best_recent_champion(
    champion: str, runs: dict[str, Path], registry: ModelRegistry, tmp_path: Path
) -> None:
    """Champion history from MLflow: a weak model that became champion after the good one cannot re-pass by being
    within ε of itself; the good champion before it is the bar. A rolled-back champion is no bar.

    (Last in this module: it moves the champion alias, and puts it back.)
    """
    tracker = Tracker.from_env()
    weak = tmp_path / "weak"
    shutil.copytree(runs["worse"], weak, ignore=shutil.ignore_patterns("gate_report.*", "mlflow_run.json"))
    floors = ["--auc-floor", "0", "--accuracy-floor", "0"]
    assert main(["gate", "--out", str(weak), "--champion", "none", *floors]) == 0
    assert main(["publish", "--out", str(weak)]) == 0
    weak_version = registry.list_versions()[-1]
    try:
        assert tracker.set_alias(CHAMPION, weak_version)
        assert tracker.recent_champions(5) == [weak_version, champion]
        assert main(["gate", "--out", str(weak), "--champion", "auto", *floors]) == 1
        report = json.loads((weak / "gate_report.json").read_text())
        verdict = {c["name"]: c for c in report["checks"]}
        assert [n for n, c in verdict.items() if not c["passed"]] == ["auc_vs_recent_champions"]
        assert f"({champion})" in verdict["auc_vs_recent_champions"]["detail"]
        assert set(report["recent_champions"]) == {weak_version, champion}
        # --recent-champions 1: the current champion alone, as before: the weak model passes against itself.
        assert (
            main(["gate", "--out", str(weak), "--champion", "auto", "--recent-champions", "1", *floors]) == 0
        )
        # A champion whose canary was rolled back leaves the history.
        assert tracker.tag_version(champion, "forkcast.rolled_back", "{}")
        assert tracker.recent_champions(5) == [weak_version]
        assert main(["gate", "--out", str(weak), "--champion", "auto", *floors]) == 0
    finally:
        tracker.client.delete_model_version_tag(
            REGISTERED_MODEL, tracker.model_version_of(champion), "forkcast.rolled_back"
        )
        tracker.set_alias(CHAMPION, champion)
