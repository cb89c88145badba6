"""The load generator against a real loopback HTTP/1.1 server: every request is counted, a non-200 is an error,
the open loop keeps its schedule, and the percentiles are numpy's default ones."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from forkcast_devservers.load import closed_loop, open_loop, percentile, summary
from forkcast_devservers.process import cpu_seconds, rss_mib

# How long the server takes to answer /slow: a generator that waited for any answer before a send would be late by
# about this much, which the open-loop test tells apart from a starved CI machine's scheduling noise.
SLOW_S = 0.5


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn serves

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/slow":
            time.sleep(SLOW_S)
        status = 500 if self.path == "/fail" else 200
        body = b'{"ok":true}'
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def _raw(path: str) -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{{}}".encode()


def test_closed_loop_counts_every_answer_and_each_non_200_as_an_error(port: int) -> None:
    ok = asyncio.run(closed_loop([port], [_raw("/ok")], 2, 0.3))
    assert ok["requests"] > 0 and ok["errors"] == 0 and ok["req_per_s"] > 0
    mixed = asyncio.run(closed_loop([port], [_raw("/ok"), _raw("/fail")], 1, 0.3))
    assert mixed["errors"] == mixed["requests"] // 2, "every second request answered 500"


def test_open_loop_sends_rate_times_seconds_requests_on_schedule(port: int) -> None:
    # Every answer takes SLOW_S: a send that waited for an earlier answer is late by >= SLOW_S - 20 ms (a closed
    # loop by seconds), so half of SLOW_S still catches it; the old 50 ms on a fast server failed whenever a starved CI
    # machine made two of the 20 sends late.
    out = asyncio.run(open_loop([port], [_raw("/slow")], 50.0, 0.4))
    assert out["requests"] == 20 and out["errors"] == 0
    assert out["send_lag_p95_ms"] < SLOW_S * 1000 / 2, "the generator fell behind its own schedule"


def test_percentiles_are_numpys_linear_ones() -> None:
    values = [float(v) for v in np.random.default_rng(3).exponential(size=101)]
    for p in (50, 95, 99):
        assert percentile(values, p) == pytest.approx(float(np.percentile(values, p)), rel=1e-12)
    assert summary([], 1.0, 0)["p50_ms"] != summary([], 1.0, 0)["p50_ms"], "no latencies: NaN, not 0"


def test_cpu_seconds_and_rss_of_this_process() -> None:
    before = cpu_seconds(os.getpid())
    sum(i * i for i in range(300_000))
    assert cpu_seconds(os.getpid()) > before
    assert 1.0 < rss_mib(os.getpid()) < 100_000
