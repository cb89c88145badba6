"""Client traffic during a rehearsal: ``requests.parquet`` rows through the gateway at a set rate, from several keys.

Several API keys, because the online-AUC job leaves out the pairs of any key holding more than
FORKCAST_AUC_MAX_KEY_SHARE of a window (issue 18.1): one key would get no AUC at all, as one client would in
production. Every answer's status and ``x-model-version`` are counted, so a drill shows which releases served and
that no request failed while pods came and went.
"""

from __future__ import annotations

import http.client
import itertools
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from forkcast_local.loadgen import request_bodies


@dataclass(frozen=True)
class Traffic:
    """How clients call during a rehearsal: requests per second, workers, keys and (optionally) a list size."""

    rate_per_s: float = 40.0
    workers: int = 4
    keys: int = 8
    # The `size` every request asks for (None: the row's own, 100-1000): a short list is fewer labelled pairs.
    size: int | None = None
    rows: int = 200


@dataclass
class TrafficStats:
    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)

    @property
    def failed(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != 200)


class Clients:
    """Worker threads posting /recommend to ``gateway`` at ``traffic.rate_per_s`` until ``stop``."""

    def __init__(self, gateway_port: int, keys: list[str], data: Path, traffic: Traffic) -> None:
        self.port, self.keys, self.traffic = gateway_port, keys, traffic
        bodies = request_bodies(data / "requests.parquet", traffic.rows)
        if traffic.size is not None:
            bodies = [(u, _with_size(b, traffic.size)) for u, b in bodies]
        self.bodies = bodies
        self.stats = TrafficStats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._tick = itertools.count()
        self._t0 = time.monotonic()
        self._threads = [threading.Thread(target=self._work, daemon=True) for _ in range(traffic.workers)]

    def start(self) -> Clients:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> TrafficStats:
        self._stop.set()
        for t in self._threads:
            t.join(15)
        return self.stats

    def _work(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self._stop.is_set():
            n = next(self._tick)
            due = self._t0 + n / self.traffic.rate_per_s
            delay = due - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            user, body = self.bodies[n % len(self.bodies)]
            headers = {"content-type": "application/json", "x-api-key": self.keys[n % len(self.keys)]}
            try:
                conn.request("POST", f"/recommend/{user}", body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                status, version = response.status, response.getheader("x-model-version", "?")
            except (OSError, http.client.HTTPException):
                conn.close()
                status, version = 0, "?"
            with self._lock:
                self.stats.sent += 1
                self.stats.statuses[status] += 1
                if status == 200:
                    self.stats.versions[version] += 1
        conn.close()


def _with_size(body: bytes, size: int) -> bytes:
    doc = json.loads(body)
    doc["size"] = size
    return json.dumps(doc).encode()
