"""Fixtures: a real redis-server loaded by the feature-store CLI, a tiny trained model, and the app on them.

The session fixtures and helpers are ``forkcast_inference.testing``'s (shared with the gateway and security tests),
imported as a module: the feature store's loader runs only from tests; the service itself does not depend on it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from forkcast_devservers.servers import RedisServer
from forkcast_inference.app import InferenceApp, create_app
from forkcast_inference.testing import ANSWER_TIMEOUT_S, make_settings, model_dir, tiny_data
from forkcast_inference.testing import features_redis as redis_server

__all__ = ["app", "model_dir", "redis_server", "tiny_data"]


@pytest.fixture
def app(redis_server: RedisServer, model_dir: Path) -> InferenceApp:
    """The app on the loaded server, with a Redis timeout for comparing answers (testing.ANSWER_TIMEOUT_S)."""
    application = create_app(make_settings(redis_server.url, model_dir, redis_timeout_s=ANSWER_TIMEOUT_S))
    application.startup()
    return application
