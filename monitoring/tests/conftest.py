"""Fixtures: a fresh real redis-server per test (forkcast_devservers' pytest plugin), fast settings for the
online-AUC job, and a local HTTP recorder standing in for GitLab's trigger API (there is no GitLab server here)."""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from forkcast_devservers.servers import RedisServer
from forkcast_monitoring.settings import MonitoringSettings


@pytest.fixture
def redis_server(redis_server_factory: Callable[..., RedisServer]) -> RedisServer:
    """An empty redis-server of this test's own (the plugin's session-wide one keeps other tests' streams)."""
    return redis_server_factory()


@pytest.fixture
def settings(redis_server: RedisServer) -> MonitoringSettings:
    return MonitoringSettings(
        environment="local",
        redis_url=redis_server.url,
        auc_window_s=600.0,
        auc_attribution_s=60.0,
        auc_min_samples=50,
        auc_min_per_class=5,
        auc_compute_every_s=0.0,
        # One API key writes most test traffic; the per-key share cap has its own tests (test_key_share.py).
        auc_max_key_share=1.0,
    )


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[tuple[str, dict[str, list[str]]]]]]:
    calls: list[tuple[str, dict[str, list[str]]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            calls.append((self.path, urllib.parse.parse_qs(body)))
            self.send_response(201)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", calls
    server.shutdown()
