"""Test support for the inference service, and for every test that needs it running: the gateway's, the security
suite's. Importable as a module (``forkcast_inference.testing``, extra ``testing``), so no test folder reaches into
another by path.

* Real dependencies: the tiny dataset (``tiny_data``, forkcast_data.testing's session fixture, re-exported here), a
  one-epoch RankNet and its serving form (``train_tiny_model``), its features loaded into a redis-server by the
  feature-store CLI (``load_features``), a real ``forkcast-inference`` process (``start_inference``), and session
  fixtures over them (``model_dir``, ``features_redis``) that a conftest imports to use: ``from
  forkcast_inference.testing import features_redis as redis_server``.
* An ASGI driver (``call``, ``drive``) and an independent reference for the service's answers (``Reference``):
  float64, plain loops, the unfolded RankNet. It reads the dataset's parquet files (not Redis) and the serving form
  and shares no code with the service but the coordinate quantisation the feature store applies (1e-7 degree), so
  that both see the same restaurant positions.

Nothing in the service imports this module; the service image installs no ``testing`` extra (pytest, polars and the
training stack are not in it).
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from forkcast_data.testing import tiny_data as tiny_data  # re-exported: the conftests import it from here
from forkcast_devservers.process import Proc, spawn, stop
from forkcast_devservers.ready import http_ok, wait_until
from forkcast_devservers.servers import RedisServer
from forkcast_inference.app import InferenceApp
from forkcast_inference.settings import InferenceSettings

PREFIX = "fct"
BIN = Path(sys.executable).parent


# -- real dependencies --------------------------------------------------------------------------------------------
def train_tiny_model(data: Path, run: Path, out: Path) -> Path:
    """A trained tiny RankNet (one epoch) and its serving form, as the files of one version in ``out``."""
    from forkcast_retrain.cli import main as retrain
    from forkcast_retrain.publish import release_files

    assert retrain(["all", "--data", str(data), "--out", str(run), "--epochs", "1"]) == 0
    for name, path in release_files(run).items():
        shutil.copy(path, out / name)
    return out


def load_features(redis_url: str, data: Path) -> None:
    """Load ``data`` into the feature store at ``redis_url`` (prefix PREFIX) and activate it, by the real CLI."""
    env = {**os.environ, "REDIS_URL": redis_url, "FORKCAST_FEATURE_PREFIX": PREFIX}
    subprocess.run(
        [str(BIN / "forkcast-features"), "load", "--data", str(data), "--activate", "--no-progress"],
        env=env,
        check=True,
        capture_output=True,
    )


# -- session fixtures over them, imported by the conftests that use them -----------------------------------------
@pytest.fixture(scope="session")
def model_dir(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained tiny RankNet and its serving form, as the files of one version (no manifest)."""
    return train_tiny_model(tiny_data, tmp_path_factory.mktemp("run"), tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def features_redis(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of its own (forkcast_devservers), loaded with the tiny dataset's features by the feature-store
    CLI; the inference and gateway conftests import it as ``redis_server``, overriding the plugin's shared one."""
    with RedisServer(tmp_path_factory.mktemp("redis-features")) as server:
        load_features(server.url, tiny_data)
        yield server


def start_inference(redis_url: str, model_dir: Path, port: int, log: Path, timeout_s: float = 30.0) -> Proc:
    """A real `forkcast-inference` process on 127.0.0.1:``port``, returned once /readyz answers 200; its output
    goes to ``log``. The caller stops it with ``forkcast_devservers.process.stop``."""
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "FORKCAST_FEATURE_PREFIX": PREFIX,
        "FORKCAST_MODEL_DIR": str(model_dir),
        "FORKCAST_HOST": "127.0.0.1",
        "FORKCAST_PORT": str(port),
        "FORKCAST_LOG_LEVEL": "WARNING",
        # FORKCAST_ENVIRONMENT defaults to production, which refuses FORKCAST_MODEL_DIR and a loopback Redis.
        "FORKCAST_ENVIRONMENT": "local",
    }
    proc = spawn([str(BIN / "forkcast-inference")], env=env, log=log)
    try:
        wait_until(
            lambda: http_ok(f"http://127.0.0.1:{port}/readyz"),
            timeout_s=timeout_s,
            what="forkcast-inference",
            proc=proc,
        )
    except BaseException:
        stop(proc)
        raise
    return proc


# For apps whose tests compare answers, not deadlines: the 0.3 s of make_settings turned a test process starved by
# a loaded machine into 503s (CI, 2026-12-05). Tests of the deadline itself keep the short default.
ANSWER_TIMEOUT_S = 5.0


def make_settings(redis_url: str, model_dir: Path | None, **extra: Any) -> InferenceSettings:
    """Settings for an in-process app on ``redis_url`` (a short Redis timeout); ``extra`` overrides any field."""
    fields: dict[str, Any] = {
        "REDIS_URL": redis_url,  # the field's alias, the variable the manifests set
        "environment": "local",  # the default, production, refuses a model directory and a loopback Redis
        "feature_prefix": PREFIX,
        "model_dir": model_dir,
        "redis_timeout_s": 0.3,
        **extra,
    }
    return InferenceSettings(**fields)


# -- the service driven in-process, and an independent reference for its answers ---------------------------------
R = 6_371_008.8


class Reference:
    """The service's answer recomputed from the dataset's parquet files and the serving form (float64, loops)."""

    def __init__(self, data: Path, model: Path) -> None:
        users = pl.read_parquet(data / "user_features.parquet").sort("user_id")
        rests = pl.read_parquet(data / "restaurant_features.parquet").sort("restaurant_id")
        self.users = {int(r[0]): [float(x) for x in r[1:]] for r in users.iter_rows()}
        self.rests = {
            int(r[0]): (round(r[1] * 1e7) / 1e7, round(r[2] * 1e7) / 1e7, [float(x) for x in r[3:]])
            for r in rests.iter_rows()
        }
        with np.load(model / "serving_weights.npz") as z:
            self.w = {k: z[k].astype(np.float64).tolist() for k in z.files}
        with np.load(model / "scaler.npz") as z:
            self.mean, self.std = z["mean"].astype(np.float64).tolist(), z["std"].astype(np.float64).tolist()

    def logit(self, x: list[float]) -> float:
        xs = [(v - m) / s for v, m, s in zip(x, self.mean, self.std, strict=True)]
        h1 = [
            sum(w * v for w, v in zip(row, xs, strict=True)) + b
            for row, b in zip(self.w["w1"], self.w["b1"], strict=True)
        ]
        h2 = [
            max(sum(w * v for w, v in zip(row, h1, strict=True)) + b, 0.0)
            for row, b in zip(self.w["w2"], self.w["b2"], strict=True)
        ]
        return float(sum(w * v for w, v in zip(self.w["w3"][0], h2, strict=True)) + self.w["b3"][0])

    @staticmethod
    def distance(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
        p1, p2 = math.radians(lat1), math.radians(lat2)
        a = (
            math.sin((p2 - p1) / 2) ** 2
            + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lng2 - lng1) / 2) ** 2
        )
        return 2 * R * math.asin(math.sqrt(a))

    def answer(self, user: int, body: dict[str, Any]) -> list[tuple[int, float, float]] | None:
        """[(id, score, displacement)] sorted and truncated, or None for an unknown user."""
        if user not in self.users:
            return None
        rows = []
        for rid in sorted(set(body["candidate_restaurant_ids"])):
            if rid not in self.rests:
                continue
            lat, lng, feats = self.rests[rid]
            d = self.distance(body["latitude"], body["longitude"], lat, lng)
            if d <= body.get("max_dist", 5000):
                z = self.logit(self.users[user] + feats)
                rows.append((rid, 1.0 / (1.0 + math.exp(-z)), d))
        if body.get("sort_dist", False):
            rows.sort(key=lambda r: (r[2], r[0]))
        else:
            rows.sort(key=lambda r: (-r[1], r[0]))
        return rows[: body.get("size", 20)]


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def call(
    app: InferenceApp, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> Response:
    """Drive the ASGI app with one request, exactly as uvicorn would (no network)."""
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    return drive(app, scope, receive)


def drive(app: InferenceApp, scope: dict[str, Any], receive: Any) -> Response:
    """Run one request through the ASGI app with the given ``receive``; the response it sent."""
    sent: list[dict[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    asyncio.run(app(scope, receive, send))
    start, payload = sent
    return Response(start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, payload["body"])
