"""`bench-serve` (issue 7): the inference service and a naive baseline on the real workload, in one run.

Starts its own redis-server (loaded by `forkcast-features load`), N service processes (one per core, as deployed:
each on its own port, the load generator spreads connections over them), then the naive baseline the same way,
and measures for each: (a) open loop at --rate req/s for --open-seconds, latency from the *scheduled* send time;
(b) closed loop at increasing concurrency (throughput, p50/p95/p99); CPU µs per request of the servers and of
Redis (from /proc and INFO cpu), memory (RSS) per worker, startup-to-ready time. The load generator runs on the
same cores: the figures are for this whole machine, and the ratio to the baseline is from the same run.

    python services/inference/benchmarks/bench_serve.py --data data/full --model-dir RUN_OR_VERSION_DIR
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import polars as pl
import redis
import uvloop

from forkcast_devservers.ports import free_port
from forkcast_devservers.servers import RedisServer

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
PREFIX = "fc"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load_naive_layout(client: redis.Redis, data: Path, users: set[int]) -> None:
    """One hash per entity: the restaurants and the users the workload asks for (1 M user hashes would not fit)."""
    rests = pl.read_parquet(data / "restaurant_features.parquet")
    ufr = pl.read_parquet(data / "user_features.parquet").filter(pl.col("user_id").is_in(list(users)))
    pipe = client.pipeline(transaction=False)
    for n, row in enumerate(rests.iter_rows(named=True)):
        rid = row.pop("restaurant_id")
        pipe.hset(f"naive:r:{rid}", mapping={k: repr(v) for k, v in row.items()})
        if n % 5000 == 4999:
            pipe.execute()
    for row in ufr.iter_rows(named=True):
        uid = row.pop("user_id")
        pipe.hset(f"naive:u:{uid}", mapping={k: repr(v) for k, v in row.items()})
    pipe.execute()


READY_TIMEOUT_S = 60.0


class Servers:
    """N server processes we started (stopped by their PIDs)."""

    def __init__(self, cmds: list[tuple[list[str], dict[str, str]]], ports: list[int]) -> None:
        self.ports = ports
        t0 = time.perf_counter()
        self.procs = [
            subprocess.Popen(c, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c, e in cmds
        ]
        deadline = time.monotonic() + READY_TIMEOUT_S
        for port, proc in zip(ports, self.procs, strict=True):
            reason = "no answer yet"
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"server on {port} exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                        if r.status == 200:
                            break
                except urllib.error.HTTPError as exc:
                    reason = exc.read().decode()[:500]
                except OSError as exc:
                    reason = str(exc)
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"server on {port} not ready after {READY_TIMEOUT_S:.0f} s: {reason}")
                time.sleep(0.05)
        self.startup_s = time.perf_counter() - t0

    def cpu(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.procs)

    def rss(self) -> list[float]:
        return [rss_mb(p.pid) for p in self.procs]

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()


def build_requests(data: Path, limit: int) -> list[tuple[bytes, set[int]]]:
    df = pl.read_parquet(data / "requests.parquet").head(limit)
    out = []
    for row in df.iter_rows(named=True):
        uid = row.pop("user_id")
        body = json.dumps(row).encode()
        head = (
            f"POST /recommend/u{uid} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        out.append((head + body, {uid}))
    return out


class Conn:
    """One keep-alive HTTP/1.1 connection; reopened once if the server closed it while idle (uvicorn: 5 s)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> None:
        self.reader, self.writer, self.port = reader, writer, port

    async def call(self, raw: bytes) -> int:
        try:
            return await self._call(raw)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.writer.close()
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
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
    conns = []
    for i in range(n):
        port = ports[i % len(ports)]
        r, w = await asyncio.open_connection("127.0.0.1", port)
        conns.append(Conn(r, w, port))
    return conns


def summary(lat: list[float], seconds: float, errors: int) -> dict[str, float]:
    a = np.array(lat) * 1000 if lat else np.array([np.nan])
    return {
        "requests": len(lat),
        "errors": errors,
        "req_per_s": len(lat) / seconds,
        "p50_ms": float(np.percentile(a, 50)),
        "p95_ms": float(np.percentile(a, 95)),
        "p99_ms": float(np.percentile(a, 99)),
    }


async def closed_loop(
    ports: list[int], reqs: list[bytes], concurrency: int, seconds: float
) -> dict[str, float]:
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
        conn = free.pop() if free else Conn(*await asyncio.open_connection("127.0.0.1", port), port)
        if await conn.call(reqs[i % len(reqs)]) != 200:
            errors += 1
        lat.append(time.perf_counter() - scheduled)
        free.append(conn)

    await asyncio.gather(*(one(i) for i in range(n)))
    for c in free:
        c.writer.close()
    out = summary(lat, seconds, errors)
    out["send_lag_p95_ms"] = float(np.percentile(np.array(lag) * 1000, 95))
    return out


def measure(
    name: str, servers: Servers, server_redis: RedisServer, reqs: list[bytes], args: argparse.Namespace
) -> dict[str, object]:
    uvloop.install()
    out: dict[str, object] = {"startup_to_ready_s": servers.startup_s}
    asyncio.run(closed_loop(servers.ports, reqs, 8, 2.0))  # warm-up
    if args.open_seconds <= 0:
        return out | {
            "closed_loop": closed_levels(name, servers, server_redis, reqs, args),
            "rss_mb": servers.rss(),
        }
    c0, r0, g0 = servers.cpu(), server_redis.cpu_seconds(), time.process_time()
    res = asyncio.run(open_loop(servers.ports, reqs, args.rate, args.open_seconds))
    n = res["requests"] or 1
    res["server_cpu_us_per_req"] = (servers.cpu() - c0) / n * 1e6
    res["redis_cpu_us_per_req"] = (server_redis.cpu_seconds() - r0) / n * 1e6
    res["loadgen_cpu_us_per_req"] = (time.process_time() - g0) / n * 1e6
    out["open_loop"] = res
    print(name, "open", res, flush=True)
    out["closed_loop"] = closed_levels(name, servers, server_redis, reqs, args)
    out["rss_mb"] = servers.rss()
    return out


def closed_levels(
    name: str, servers: Servers, server_redis: RedisServer, reqs: list[bytes], args: argparse.Namespace
) -> list[dict[str, float]]:
    closed = []
    for conc in args.concurrency:
        c0, r0, g0 = servers.cpu(), server_redis.cpu_seconds(), time.process_time()
        res = asyncio.run(closed_loop(servers.ports, reqs, conc, args.closed_seconds))
        n = res["requests"] or 1
        res["concurrency"] = conc
        res["server_cpu_us_per_req"] = (servers.cpu() - c0) / n * 1e6
        res["redis_cpu_us_per_req"] = (server_redis.cpu_seconds() - r0) / n * 1e6
        res["loadgen_cpu_us_per_req"] = (time.process_time() - g0) / n * 1e6
        closed.append(res)
        print(name, "closed", res, flush=True)
    return closed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--data", type=Path, default=Path("data/full"), help="dataset (requests.parquet, features)"
    )
    p.add_argument(
        "--model-dir", type=Path, required=True, help="version files (serving form + model.pt + scaler)"
    )
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="server processes (one per core)")
    p.add_argument("--rate", type=float, default=30.0, help="open-loop rate, req/s")
    p.add_argument("--open-seconds", type=float, default=60.0, help="open-loop duration")
    p.add_argument("--closed-seconds", type=float, default=10.0, help="duration of each closed-loop level")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8, 16, 32], help="closed-loop levels")
    p.add_argument(
        "--baseline-concurrency", type=int, nargs="+", default=[1, 4, 16], help="levels for the baseline"
    )
    p.add_argument("--fastapi-core", action="store_true", help="also measure the same core behind FastAPI")
    p.add_argument(
        "--fastapi-concurrency", type=int, nargs="+", default=[4, 8], help="levels for --fastapi-core"
    )
    p.add_argument("--skip-baseline", action="store_true", help="leave out the naive baseline")
    p.add_argument("--requests", type=int, default=10_000, help="requests taken from requests.parquet")
    p.add_argument("--out", type=Path, default=None, help="write the JSON results here")
    args = p.parse_args()
    reqs_users = build_requests(args.data, args.requests)
    reqs = [r for r, _ in reqs_users]
    results: dict[str, object] = {"workers": args.workers, "requests": len(reqs)}
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as redis_dir, RedisServer(Path(redis_dir)) as rs:
        env = {
            **os.environ,
            "REDIS_URL": rs.url,
            "FORKCAST_FEATURE_PREFIX": PREFIX,
            "OPENBLAS_NUM_THREADS": "1",
        }
        t = time.perf_counter()
        subprocess.run(
            [str(BIN / "forkcast-features"), "load", "--data", str(args.data), "--activate", "--no-progress"],
            env=env,
            check=True,
            capture_output=True,
        )
        print(f"features loaded in {time.perf_counter() - t:.1f} s", flush=True)
        ports = [free_port() for _ in range(args.workers)]
        cmds = [
            (
                [str(BIN / "forkcast-inference")],
                {
                    **env,
                    "FORKCAST_PORT": str(pt),
                    "FORKCAST_MODEL_DIR": str(args.model_dir),
                    "FORKCAST_LOG_LEVEL": "WARNING",
                },
            )
            for pt in ports
        ]
        servers = Servers(cmds, ports)
        try:
            results["service"] = measure("service", servers, rs, reqs, args)
        finally:
            servers.stop()
        if args.fastapi_core:
            ports = [free_port() for _ in range(args.workers)]
            cmds = [
                (
                    [sys.executable, str(HERE / "fastapi_core.py"), "--port", str(pt)],
                    {**cmds[0][1], "FORKCAST_PORT": str(pt)},
                )
                for pt in ports
            ]
            servers = Servers(cmds, ports)
            try:
                variant = argparse.Namespace(
                    **{**vars(args), "open_seconds": 0, "concurrency": args.fastapi_concurrency}
                )
                results["fastapi_core"] = measure("fastapi_core", servers, rs, reqs, variant)
            finally:
                servers.stop()
        if not args.skip_baseline:
            load_naive_layout(redis.Redis(port=rs.port), args.data, set().union(*(u for _, u in reqs_users)))
            ports = [free_port() for _ in range(args.workers)]
            cmds = [
                (
                    [
                        sys.executable,
                        str(HERE / "naive_app.py"),
                        "--port",
                        str(pt),
                        "--redis-url",
                        rs.url,
                        "--model-dir",
                        str(args.model_dir),
                    ],
                    env,
                )
                for pt in ports
            ]
            servers = Servers(cmds, ports)
            try:
                variant = argparse.Namespace(**{**vars(args), "concurrency": args.baseline_concurrency})
                results["baseline"] = measure("baseline", servers, rs, reqs, variant)
            finally:
                servers.stop()
    best = lambda r: max(c["req_per_s"] for c in r["closed_loop"])  # noqa: E731
    for other in ("baseline", "fastapi_core"):
        if other in results:
            results[f"max_ratio_vs_{other}"] = best(results["service"]) / best(results[other])  # type: ignore[arg-type]
    print(json.dumps(results, indent=1))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
