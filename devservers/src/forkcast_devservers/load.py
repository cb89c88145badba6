"""HTTP load on servers started here: a closed loop and an open loop over keep-alive HTTP/1.1 connections to
127.0.0.1, for the benchmarks (inference's bench_serve, the gateway's bench_gateway) to drive the same way.

The open loop sends at fixed scheduled times and measures latency from the *schedule*, so queueing delay is not
hidden (coordinated omission); the closed loop keeps ``concurrency`` requests in flight. Requests are whole raw
HTTP/1.1 messages (head + body) made by the caller. Lifted from the inference benchmark, where it was written and
measured; percentiles are numpy's default ("linear"), computed with ``statistics.quantiles(method="inclusive")``,
which interpolates the same way.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time

from forkcast_devservers.servers.base import HOST


class Conn:
    """One keep-alive HTTP/1.1 connection; reopened once if the server closed it while idle (uvicorn: 5 s)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> None:
        self.reader, self.writer, self.port = reader, writer, port

    async def call(self, raw: bytes) -> int:
        """Send one request; its status (the body is read and dropped)."""
        try:
            return await self._call(raw)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.writer.close()
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
            return await self._call(raw)

    async def _call(self, raw: bytes) -> int:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.reader.readexactly(length)
        return status


async def connect(ports: list[int], n: int) -> list[Conn]:
    """``n`` connections spread round-robin over ``ports``."""
    conns = []
    for i in range(n):
        port = ports[i % len(ports)]
        r, w = await asyncio.open_connection(HOST, port)
        conns.append(Conn(r, w, port))
    return conns


def percentile(values: list[float], p: int) -> float:
    """The ``p``-th percentile, linearly interpolated between order statistics (numpy's default); NaN if empty."""
    if not values:
        return math.nan
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1] if 0 < p < 100 else math.nan


def summary(lat: list[float], seconds: float, errors: int) -> dict[str, float]:
    """Requests, errors, throughput and p50/p95/p99 in milliseconds of latencies ``lat`` (seconds)."""
    ms = [x * 1000 for x in lat]
    return {
        "requests": len(lat),
        "errors": errors,
        "req_per_s": len(lat) / seconds,
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "p99_ms": percentile(ms, 99),
    }


async def closed_loop(
    ports: list[int], reqs: list[bytes], concurrency: int, seconds: float
) -> dict[str, float]:
    """``concurrency`` workers, each sending its next request as soon as the last answered, for ``seconds``."""
    conns = await connect(ports, concurrency)
    lat: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def worker(k: int, conn: Conn) -> None:
        nonlocal errors
        i = k
        while time.perf_counter() < stop:
            t = time.perf_counter()
            if await conn.call(reqs[i % len(reqs)]) != 200:
                errors += 1
            lat.append(time.perf_counter() - t)
            i += concurrency

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(k, c) for k, c in enumerate(conns)))
    elapsed = time.perf_counter() - t0
    for c in conns:
        c.writer.close()
    return summary(lat, elapsed, errors)


async def open_loop(ports: list[int], reqs: list[bytes], rate: float, seconds: float) -> dict[str, float]:
    """Send at fixed scheduled times; latency counts from the schedule, so queueing delay is not hidden."""
    conns = await connect(ports, 16)
    free = list(conns)
    lat: list[float] = []
    lag: list[float] = []
    errors = 0
    start = time.perf_counter() + 0.1
    n = int(rate * seconds)

    async def one(i: int) -> None:
        nonlocal errors
        scheduled = start + i / rate
        # The event loop's timers wake up to ~1 ms late; sleep to just before the slot, then spin to it, so the
        # generator's own lateness is not charged to the server (it is still counted: latency is from the slot).
        await asyncio.sleep(max(0.0, scheduled - time.perf_counter() - 0.002))
        while time.perf_counter() < scheduled:
            pass
        lag.append(time.perf_counter() - scheduled)
        port = ports[i % len(ports)]
        conn = free.pop() if free else Conn(*await asyncio.open_connection(HOST, port), port)
        if await conn.call(reqs[i % len(reqs)]) != 200:
            errors += 1
        lat.append(time.perf_counter() - scheduled)
        free.append(conn)

    await asyncio.gather(*(one(i) for i in range(n)))
    for c in free:
        c.writer.close()
    out = summary(lat, seconds, errors)
    out["send_lag_p95_ms"] = percentile([x * 1000 for x in lag], 95)
    return out
