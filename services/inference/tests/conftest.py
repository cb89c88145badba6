"""Fixtures: a real redis-server loaded by the feature-store CLI, a tiny trained model, and an ASGI driver.

The redis-server launcher is the feature store's (forkcast_features.localredis), used here only from tests: the
service itself does not depend on that package.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# Helpers shared by the test modules (importlib mode puts no test folder on sys.path by itself).
sys.path.insert(0, str(Path(__file__).parent))

import inference_support as shared
from inference_support import RedisServer, make_settings

from forkcast_inference.app import InferenceApp, create_app

# The session fixtures (tiny data, tiny model, loaded redis-server) live with the helpers, shared with the gateway.
tiny_data, model_dir, redis_server = shared.tiny_data, shared.model_dir, shared.redis_server


@pytest.fixture
def app(redis_server: RedisServer, model_dir: Path) -> InferenceApp:
    application = create_app(make_settings(redis_server.url, model_dir))
    application.startup()
    return application
