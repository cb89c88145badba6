"""Fixtures: a real redis-server loaded by the feature-store CLI, a tiny trained model, and an ASGI driver.

The redis-server launcher is the feature store's (forkcast_features.localredis), used here only from tests: the
service itself does not depend on that package.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Helpers shared by the test modules (importlib mode puts no test folder on sys.path by itself).
sys.path.insert(0, str(Path(__file__).parent))

from inference_support import generate_tiny, load_features, make_settings, train_tiny_model

from forkcast_features.localredis import LocalRedis
from forkcast_inference.app import InferenceApp, create_app


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_tiny(tmp_path_factory.mktemp("tiny") / "data")


@pytest.fixture(scope="session")
def model_dir(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained tiny RankNet and its serving form, as the files of one version (no manifest)."""
    return train_tiny_model(tiny_data, tmp_path_factory.mktemp("run"), tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def redis_server(tiny_data: Path) -> Iterator[LocalRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed (Debian package redis-server)")
    with LocalRedis() as server:
        load_features(server.url, tiny_data)
        yield server


@pytest.fixture
def app(redis_server: LocalRedis, model_dir: Path) -> InferenceApp:
    application = create_app(make_settings(redis_server.url, model_dir))
    application.startup()
    return application
