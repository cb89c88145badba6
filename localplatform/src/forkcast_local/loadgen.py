"""Real requests from ``requests.parquet`` through the gateway, one keep-alive connection, bounded in count.

Sequential on purpose: the demo shows what one client sees (latency per request) without loading a shared machine;
``make load`` is the load test.
"""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import polars as pl


@dataclass
class RequestStats:
    sent: int = 0
    ok: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    samples: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)
    # The x-model-version header of every 200: proves which release actually answered.
    model_versions: set[str] = field(default_factory=set)

    def quantile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def p50_ms(self) -> float:
        return self.quantile(0.50)

    @property
    def p95_ms(self) -> float:
        return self.quantile(0.95)


def request_bodies(path: Path, limit: int) -> list[tuple[str, bytes]]:
    """(user path id, JSON body) of the first ``limit`` rows, in the public API's shape (SPEC §6)."""
    rows = pl.read_parquet(path).head(limit).iter_rows(named=True)
    return [
        (
            f"u{int(r['user_id']):05d}",
            json.dumps(
                {
                    "candidate_restaurant_ids": list(r["candidate_restaurant_ids"]),
                    "latitude": r["latitude"],
                    "longitude": r["longitude"],
                    "size": int(r["size"]),
                    "max_dist": r["max_dist"],
                    "sort_dist": bool(r["sort_dist"]),
                }
            ).encode(),
        )
        for r in rows
    ]


def send_requests(base_url: str, api_key: str, path: Path, count: int, samples: int = 3) -> RequestStats:
    """POST /recommend for ``count`` rows of ``path``; a non-200 or a broken connection counts as an error."""
    stats = RequestStats()
    url = urlsplit(base_url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=10)
    headers = {"content-type": "application/json", "x-api-key": api_key}
    try:
        for user, body in request_bodies(path, count):
            stats.sent += 1
            start = time.perf_counter()
            try:
                conn.request("POST", f"/recommend/{user}", body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                stats.errors += 1
                stats.statuses[0] = stats.statuses.get(0, 0) + 1
                continue
            stats.latencies_ms.append((time.perf_counter() - start) * 1000)
            stats.statuses[response.status] = stats.statuses.get(response.status, 0) + 1
            if response.status != 200:
                stats.errors += 1
                continue
            stats.ok += 1
            stats.model_versions.add(response.getheader("x-model-version", "?"))
            top = json.loads(payload)["restaurants"]
            if len(stats.samples) < samples and top:
                stats.samples.append((user, top))
    finally:
        conn.close()
    return stats
