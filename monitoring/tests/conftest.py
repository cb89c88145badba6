"""Fixtures: a real redis-server (the feature store's test launcher), fast settings for the online-AUC job, and a
local HTTP recorder standing in for GitLab's trigger API (there is no GitLab server here)."""

from __future__ import annotations

import shutil
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

# Helpers shared by the test modules (importlib mode puts no test folder on sys.path by itself).
sys.path.insert(0, str(Path(__file__).parent))

from forkcast_features.localredis import LocalRedis
from forkcast_monitoring.settings import MonitoringSettings


@pytest.fixture
def redis_server() -> Iterator[LocalRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed (Debian package redis-server)")
    with LocalRedis() as server:
        yield server


@pytest.fixture
def settings(redis_server: LocalRedis) -> MonitoringSettings:
    return MonitoringSettings(
        redis_url=redis_server.url,
        auc_window_s=600.0,
        auc_attribution_s=60.0,
        auc_min_samples=50,
        auc_min_per_class=5,
        auc_compute_every_s=0.0,
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
