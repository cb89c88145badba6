"""Fixtures: a real redis-server with the tiny dataset's features, a real `forkcast-inference` process with a tiny
trained model, and gateway factories. The data/model/feature helpers are the inference tests' own
(services/inference/tests/inference_support.py), imported by path, not copied.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[2] / "inference" / "tests"))

from gateway_support import ADMIN_KEY, KEY, write_keys
from inference_support import free_port, generate_tiny, load_features, start_inference, train_tiny_model

from forkcast_features.localredis import LocalRedis
from forkcast_gateway.app import create_app
from forkcast_gateway.edge import Edge
from forkcast_gateway.settings import GatewaySettings


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_tiny(tmp_path_factory.mktemp("tiny") / "data")


@pytest.fixture(scope="session")
def model_dir(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_model(tiny_data, tmp_path_factory.mktemp("run"), tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def redis_server(tiny_data: Path) -> Iterator[LocalRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed (Debian package redis-server)")
    with LocalRedis() as server:
        load_features(server.url, tiny_data)
        yield server


@pytest.fixture(scope="session")
def inference_url(redis_server: LocalRedis, model_dir: Path) -> Iterator[str]:
    port = free_port()
    proc = start_inference(redis_server.url, model_dir, port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_keys(
        tmp_path_factory.mktemp("keys") / "api-keys", {"user": (KEY, ""), "ops": (ADMIN_KEY, "admin")}
    )


@pytest.fixture
def make_gateway(redis_server: LocalRedis, keys_file: Path) -> Callable[..., Edge]:
    """Build a gateway app; keyword arguments override settings (upstreams defaults to nothing useful)."""

    def build(**overrides: Any) -> Edge:
        fields: dict[str, Any] = {
            "REDIS_URL": redis_server.url,
            "api_keys_file": keys_file,
            "access_log": False,
            **overrides,
        }
        return create_app(GatewaySettings(**fields))

    return build
