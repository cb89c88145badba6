"""``forkcast-local demo``: the whole loop once, on the small dataset, with a line per stage and its time.

data → train → platform up → gate → publish (S3 + MLflow) → promote (scratch GitOps repo) → features → inference on
the promoted release → real requests through the gateway → summary. Every stage is safe to re-run: the dataset
generator and the feature loader are idempotent, a run directory is keyed by the dataset fingerprint and epochs (an
evaluated one is reused), a published run is not published again, and promotion of the released version is a no-op.
The user's working repository is never committed to: promotion goes to ``.local/gitops``, a Git repo holding a copy
of ``manifests/``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from forkcast_devservers.ready import http_ok, wait_until
from forkcast_local.config import REPO_ROOT, PlatformConfig
from forkcast_local.loadgen import RequestStats, send_requests
from forkcast_local.supervisor import Platform, release_file, up

OVERLAY_SOURCE = REPO_ROOT / "manifests"


@dataclass(frozen=True)
class DemoOptions:
    data: Path
    preset: str
    epochs: int
    requests: int


@contextmanager
def stage(title: str) -> Iterator[None]:
    start = time.monotonic()
    print(f"▶ {title}", flush=True)
    yield
    print(f"✔ {title} ({time.monotonic() - start:.1f} s)", flush=True)


def _run(config: PlatformConfig, env: dict[str, str], *argv: str) -> str:
    """Run a forkcast CLI from the venv; its output is echoed indented, a failure stops the demo with it."""
    proc = subprocess.run(
        [str(config.bin_dir / argv[0]), *argv[1:]],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    for line in (proc.stdout + proc.stderr).splitlines()[-6:]:
        print(f"    {line}")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:2])} failed with exit status {proc.returncode}")
    return proc.stdout


def _ensure_gitops(config: PlatformConfig) -> Path:
    """A scratch Git repository with a copy of the repo's manifests/, the target of `promote` in the demo, and a
    bare `origin` beside it (``gitops-origin.git``, what Argo CD would read), which CI's `promote --push` pushes to."""
    repo = config.gitops
    if (repo / ".git").is_dir():
        return repo
    repo.mkdir(parents=True, exist_ok=True)
    origin = repo.parent / "gitops-origin.git"
    subprocess.run(
        ["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True, capture_output=True
    )
    # CI pushes release commits with `-o ci.skip`, which GitLab accepts; a bare repository must be told to.
    subprocess.run(
        ["git", "config", "receive.advertisePushOptions", "true"], cwd=origin, check=True, capture_output=True
    )
    shutil.copytree(OVERLAY_SOURCE, repo / "manifests", dirs_exist_ok=True)
    for args in (
        ["init", "-q", "-b", "main"],
        ["config", "user.name", "forkcast demo"],
        ["config", "user.email", "demo@forkcast.localhost"],
        ["add", "manifests"],
        ["commit", "-q", "-m", "Scratch GitOps repository of the local demo (copy of manifests/)"],
        ["remote", "add", "origin", str(origin)],
        ["push", "-q", "-u", "origin", "main"],
    ):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    return repo


def _train(config: PlatformConfig, opts: DemoOptions) -> Path:
    fingerprint = json.loads((opts.data / "dataset.json").read_text())["fingerprint"]
    run = config.root / "runs" / f"{fingerprint[:12]}-e{opts.epochs}"
    if (run / "metrics.json").is_file() and (run / "model.pt").is_file():
        print(f"    reusing the evaluated run {run}")
        return run
    _run(config, {}, "forkcast-retrain", "all", "--data", str(opts.data), "--out", str(run),
         "--epochs", str(opts.epochs), "--no-progress")  # fmt: skip
    return run


def _publish(config: PlatformConfig, ctx: Platform, run: Path) -> dict[str, str]:
    """Gate and publish ``run`` unless it already is a version in this platform's S3; returns published.json."""
    published = run / "published.json"
    env = ctx.client_env()
    if published.is_file():
        info: dict[str, str] = json.loads(published.read_text())
        if http_ok(f"{ctx.url('seaweed')}/healthz") and _version_exists(ctx, info["version"]):
            print(f"    {info['version']} already published at {info['uri']}")
            return info
        published.unlink()  # the platform's data was reset: publish again
    _run(config, env, "forkcast-retrain", "gate", "--out", str(run), "--champion", "auto")
    _run(config, env, "forkcast-retrain", "publish", "--out", str(run), "--create-bucket")
    result: dict[str, str] = json.loads(published.read_text())
    return result


def _version_exists(ctx: Platform, version: str) -> bool:
    from forkcast_registry.registry import ModelRegistry
    from forkcast_registry.settings import RegistrySettings

    # The aliases are the environment variable names (S3_ENDPOINT_URL, …), exactly what client_env() holds.
    keys = ("S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "FORKCAST_BUCKET")
    fields: dict[str, Any] = {k: v for k, v in ctx.client_env().items() if k in keys}
    settings = RegistrySettings(**fields)
    registry = ModelRegistry.from_settings(settings)
    return bool(registry.store.exists(registry.key(version, "manifest.json")))


def run_demo(config: PlatformConfig, opts: DemoOptions) -> int:
    started = time.monotonic()
    with stage(f"dataset ({opts.preset}) in {opts.data}"):
        _run(config, {}, "forkcast-data", "generate", "--preset", opts.preset, "--out", str(opts.data),
             "--no-progress")  # fmt: skip
    with stage(f"train ({opts.epochs} epochs)"):
        run = _train(config, opts)
        metrics = json.loads((run / "metrics.json").read_text())
        print(f"    test ROC-AUC {metrics['roc_auc']:.4f}, accuracy {metrics['accuracy']:.4f}")
    with stage(
        f"platform up (manifests/overlays/{config.overlay}, with S3, MLflow, Alertmanager, Prometheus)"
    ):
        ctx = up(config, log=lambda line: print(f"    {line}"))
    with stage("gate + publish to S3 and MLflow"):
        published = _publish(config, ctx, run)
    with stage(f"promote into the scratch GitOps repo {config.gitops}"):
        repo = _ensure_gitops(config)
        _run(config, ctx.client_env(), "forkcast-retrain", "promote", "--version", published["version"],
             "--overlay", config.overlay, "--repo", str(repo))  # fmt: skip
    with stage(f"load features into Redis from {opts.data}"):
        _run(config, ctx.client_env(), "forkcast-features", "load", "--data", str(opts.data), "--activate",
             "--no-progress")  # fmt: skip
    with stage(f"inference on the promoted release ({release_file(config).name})"):
        ctx = up(config, log=lambda line: print(f"    {line}"))
        for name in ("inference", "gateway"):
            try:
                wait_until(partial(http_ok, f"{ctx.url(name)}/readyz"), timeout_s=120, what=name)
            except TimeoutError as exc:
                raise RuntimeError(f"{name} not ready; see `forkcast-local logs {name}`") from exc
    key = config.api_key_file.read_text().strip()
    with stage(f"{opts.requests} requests from requests.parquet through the gateway"):
        stats = send_requests(ctx.url("gateway"), key, opts.data / "requests.parquet", opts.requests)
    _summary(ctx, published, metrics, stats, time.monotonic() - started)
    served_promoted = stats.model_versions == {published["version"]}
    return 0 if stats.errors == 0 and served_promoted else 1


def _summary(
    ctx: Platform, published: dict[str, str], metrics: dict[str, float], stats: RequestStats, wall_s: float
) -> None:
    print("\nA few recommendations:")
    for user, top in stats.samples:
        shown = ", ".join(f"{r['id']} ({r['score']:.3f}, {r['displacement']:.0f} m)" for r in top[:3])
        print(f"  user {user}: {shown}")
    print("\nSummary")
    print(f"  model version     {published['version']}  ({published['uri']})")
    print(f"  offline ROC-AUC   {metrics['roc_auc']:.4f}   accuracy {metrics['accuracy']:.4f}")
    print(f"  requests          {stats.sent} sent, {stats.ok} ok, {stats.errors} errors {stats.statuses}")
    print(f"  served by model   {', '.join(sorted(stats.model_versions)) or '-'}")
    print(
        f"  latency (gateway) p50 {stats.p50_ms:.1f} ms, p95 {stats.p95_ms:.1f} ms (sequential, 1 connection)"
    )
    print(f"  demo wall time    {wall_s:.0f} s")
    print("\nWhere to look")
    print(f"  API docs          {ctx.url('gateway')}/docs   (key in {ctx.config.api_key_file})")
    print(f"  MLflow UI         {ctx.url('mlflow')}")
    print(f"  Prometheus        {ctx.url('prometheus')}/alerts   (targets: {ctx.url('prometheus')}/targets)")
    print(f"  Alertmanager      {ctx.url('alertmanager')}")
    print(f"  online AUC        {ctx.url('online-auc')}/metrics")
    print(f"  inference         {ctx.url('inference')}/version, /metrics")
    print(f"  release commit    git -C {ctx.config.gitops} log -1")
    print("  platform          forkcast-local status | logs [component] | down")
