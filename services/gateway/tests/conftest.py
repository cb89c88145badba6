"""Fixtures: a real redis-server with the tiny dataset's features, a real `forkcast-inference` process with a tiny
trained model, and gateway factories. The data/model/Redis fixtures and helpers are the inference tests' own
(``forkcast_inference.testing``), imported as a module, not copied; the gateway's helpers are
``forkcast_gateway.testing``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from forkcast_devservers.ports import free_port
from forkcast_devservers.process import stop
from forkcast_devservers.servers import RedisServer
from forkcast_gateway.app import create_app
from forkcast_gateway.edge import Edge
from forkcast_gateway.request_ids import RequestIds
from forkcast_gateway.settings import GatewaySettings
from forkcast_gateway.testing import ADMIN_KEY, KEY, write_keys

# The inference tests' session fixtures: tiny data, tiny model, a redis-server loaded with its features.
from forkcast_inference.testing import features_redis as redis_server
from forkcast_inference.testing import model_dir, start_inference, tiny_data

__all__ = [
    "ids",
    "inference_url",
    "keys_file",
    "make_gateway",
    "model_dir",
    "redis_server",
    "request_id_key_file",
    "tiny_data",
]


@pytest.fixture(scope="session")
def inference_url(
    redis_server: RedisServer, model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    port = free_port()
    proc = start_inference(
        redis_server.url, model_dir, port, tmp_path_factory.mktemp("inference") / "inference.log"
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_keys(
        tmp_path_factory.mktemp("keys") / "api-keys", {"user": (KEY, ""), "ops": (ADMIN_KEY, "admin")}
    )


@pytest.fixture(scope="session")
def request_id_key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The request-id secret every test gateway shares, so a test can mint ids as the gateway does."""
    path = tmp_path_factory.mktemp("rid") / "request-id-key"
    path.write_text("# signing secret\n" + secrets.token_urlsafe(32) + "\n")
    return path


@pytest.fixture(scope="session")
def ids(request_id_key_file: Path) -> RequestIds:
    return RequestIds.from_file(request_id_key_file)


@pytest.fixture
def make_gateway(
    redis_server: RedisServer, keys_file: Path, request_id_key_file: Path
) -> Callable[..., Edge]:
    """Build a gateway app; keyword arguments override settings (upstreams defaults to nothing useful).

    The Redis, connect and upstream timeouts default to generous values, not production's 0.1 s / 0.05 s / 1 s: the
    app, its stand-in upstreams and the test client share one process, and on a starved CI machine those can turn
    tests that only compare answers into 503s, fail-open admissions and retries. A test about one of these
    timeouts passes its own short value."""

    def build(**overrides: Any) -> Edge:
        fields: dict[str, Any] = {
            "environment": "local",  # the default, production, refuses the development settings used here
            "REDIS_URL": redis_server.url,
            "api_keys_file": keys_file,
            "request_id_key_file": request_id_key_file,
            "access_log": False,
            "redis_timeout_s": 5.0,
            "connect_timeout_s": 2.0,
            "upstream_timeout_s": 10.0,
            **overrides,
        }
        return create_app(GatewaySettings(**fields))

    return build
