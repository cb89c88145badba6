"""`bench-serve` (issues 7, 19.3): the inference service, its floor and a naive baseline on the real workload.

Starts its own redis-server (loaded by `forkcast-features load`), N service processes (one per core, as deployed:
each on its own port, the load generator spreads connections over them), then the naive baseline the same way,
and measures for each: (a) open loop at --rate req/s for --open-seconds, latency from the *scheduled* send time;
(b) closed loop at increasing concurrency (throughput, p50/p95/p99); CPU µs per request of the servers and of
Redis (from /proc and INFO cpu), memory (RSS) per worker, startup-to-ready time. The load generator runs on the
same cores: the figures are for this whole machine, and the ratio to the baseline is from the same run.

The floor (``floor_app.py``, issue 19.3) is the same HTTP stack doing the same Redis round trip (same keys, same
MGET size) and answering a canned body; at ``--floor-concurrency`` it prints ``floor ratio`` = service req/s ÷
floor req/s and the CPU µs per request of both (the CPU figure varies less than req/s on this shared machine).
The *contract floor* (``floor_app.py --contract-work``) is the floor plus what SPEC §6 asks of any implementation
before it ranks: the request id, decoding and validating the body, the answer's version and request-id headers,
and logging the prediction event. Its ratio to the floor bounds
what any ranking code could reach on this stack; the service's ratio to it is what the ranking costs.

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
from functools import partial
from pathlib import Path

import polars as pl
import redis
import uvloop

from forkcast_devservers.load import closed_loop, open_loop
from forkcast_devservers.ports import free_port
from forkcast_devservers.process import cpu_seconds, rss_mib, spawn, stop
from forkcast_devservers.ready import http_ok, wait_until
from forkcast_devservers.servers import RedisServer

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
PREFIX = "fc"


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
    """N server processes we started (forkcast_devservers: own process groups, stopped by PID + start time)."""

    def __init__(self, cmds: list[tuple[list[str], dict[str, str]]], ports: list[int], logs: Path) -> None:
        self.ports = ports
        t0 = time.perf_counter()
        self.procs = [
            spawn(c, env=e, log=logs / f"server-{p}.log") for (c, e), p in zip(cmds, ports, strict=True)
        ]
        try:
            for port, proc in zip(ports, self.procs, strict=True):
                url = f"http://127.0.0.1:{port}/readyz"
                wait_until(partial(http_ok, url), timeout_s=READY_TIMEOUT_S, what=url, proc=proc)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.perf_counter() - t0

    def cpu(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.procs)

    def rss(self) -> list[float]:
        return [rss_mib(p.pid) for p in self.procs]

    def stop(self) -> None:
        for p in self.procs:
            stop(p)


def build_requests(data: Path, limit: int) -> list[tuple[bytes, set[int], str, str]]:
    """(raw HTTP request, {user id}, path, body) of the first ``limit`` rows of requests.parquet."""
    df = pl.read_parquet(data / "requests.parquet").head(limit)
    out = []
    for row in df.iter_rows(named=True):
        uid = row.pop("user_id")
        body = json.dumps(row)
        path = f"/recommend/u{uid}"
        head = (
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        out.append((head + body.encode(), {uid}, path, body))
    return out


def xadd_calls(server: RedisServer) -> int:
    """XADD commands the server has run (INFO commandstats), to show the contract floor logged its events."""
    stats = redis.Redis(port=server.port).info("commandstats")
    return int(stats.get("cmdstat_xadd", {}).get("calls", 0))


def measure(
    name: str, servers: Servers, server_redis: RedisServer, reqs: list[bytes], args: argparse.Namespace
) -> dict[str, object]:
    uvloop.install()
    out: dict[str, object] = {"startup_to_ready_s": servers.startup_s}
    warm = asyncio.run(closed_loop(servers.ports, reqs, 8, 2.0))
    out["warmup_requests"] = warm["requests"]  # every request sent was answered (closed_loop waits for each)
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


def floor_ratio(results: dict[str, object], conc: int) -> dict[str, float]:
    """Service req/s ÷ floor req/s at ``conc`` connections (target ≥ 0.75), with both CPU µs per request, and the
    same for the contract floor (its ratio to the floor, the service's ratio to it); printed."""

    def level(name: str) -> dict[str, float]:
        closed: list[dict[str, float]] = results[name]["closed_loop"]  # type: ignore[index]
        return next(c for c in closed if c["concurrency"] == conc)

    svc, flo, con = level("service"), level("floor"), level("contract_floor")
    out = {
        "concurrency": conc,
        "ratio": svc["req_per_s"] / flo["req_per_s"],
        "service_req_per_s": svc["req_per_s"],
        "floor_req_per_s": flo["req_per_s"],
        "service_cpu_us_per_req": svc["server_cpu_us_per_req"],
        "floor_cpu_us_per_req": flo["server_cpu_us_per_req"],
        "contract_floor_ratio": con["req_per_s"] / flo["req_per_s"],
        "service_to_contract_floor": svc["req_per_s"] / con["req_per_s"],
        "contract_floor_req_per_s": con["req_per_s"],
        "contract_floor_cpu_us_per_req": con["server_cpu_us_per_req"],
    }
    total = {  # server + Redis + load generator CPU per request: on these shared cores req/s follows it
        name: lv["server_cpu_us_per_req"] + lv["redis_cpu_us_per_req"] + lv["loadgen_cpu_us_per_req"]
        for name, lv in (("service", svc), ("floor", flo), ("contract floor", con))
    }
    print(
        f"floor ratio {out['ratio']:.2f} at {conc} connections: service {svc['req_per_s']:,.0f} req/s,"
        f" {svc['server_cpu_us_per_req']:.0f} µs server CPU/req; floor {flo['req_per_s']:,.0f} req/s,"
        f" {flo['server_cpu_us_per_req']:.0f} µs server CPU/req",
        flush=True,
    )
    print(
        f"contract floor (floor + decode + event) {out['contract_floor_ratio']:.2f} of the floor:"
        f" {con['req_per_s']:,.0f} req/s, {con['server_cpu_us_per_req']:.0f} µs server CPU/req;"
        f" service {out['service_to_contract_floor']:.2f} of the contract floor",
        flush=True,
    )
    print(
        "server + Redis + load generator CPU µs/req: "
        + ", ".join(f"{name} {us:.0f}" for name, us in total.items()),
        flush=True,
    )
    return out


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
    p.add_argument(
        "--floor-concurrency",
        type=int,
        nargs="+",
        default=[16],
        help="levels for the floor (ratio at the last)",
    )
    p.add_argument("--requests", type=int, default=10_000, help="requests taken from requests.parquet")
    p.add_argument("--out", type=Path, default=None, help="write the JSON results here")
    args = p.parse_args()
    reqs_users = build_requests(args.data, args.requests)
    reqs = [r for r, *_ in reqs_users]
    results: dict[str, object] = {"workers": args.workers, "requests": len(reqs)}
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as redis_dir, RedisServer(Path(redis_dir)) as rs:
        env = {
            **os.environ,
            "REDIS_URL": rs.url,
            "FORKCAST_FEATURE_PREFIX": PREFIX,
            "OPENBLAS_NUM_THREADS": "1",
            # The default, production, refuses FORKCAST_MODEL_DIR and a loopback Redis.
            "FORKCAST_ENVIRONMENT": "local",
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
        servers = Servers(cmds, ports, Path(redis_dir))
        try:
            results["service"] = measure("service", servers, rs, reqs, args)
        finally:
            servers.stop()
        workload = Path(redis_dir) / "requests.jsonl"
        workload.write_text("".join(json.dumps([path, body]) + "\n" for *_, path, body in reqs_users))
        ports = [free_port() for _ in range(args.workers)]
        floor_cmds = [
            (
                [sys.executable, str(HERE / "floor_app.py"), "--port", str(pt), "--requests", str(workload)],
                {**cmds[0][1], "FORKCAST_PORT": str(pt)},
            )
            for pt in ports
        ]
        servers = Servers(floor_cmds, ports, Path(redis_dir))
        try:
            variant = argparse.Namespace(
                **{**vars(args), "open_seconds": 0, "concurrency": args.floor_concurrency}
            )
            results["floor"] = measure("floor", servers, rs, reqs, variant)
        finally:
            servers.stop()
        xadds = xadd_calls(rs)
        servers = Servers([([*c, "--contract-work"], e) for c, e in floor_cmds], ports, Path(redis_dir))
        try:
            results["contract_floor"] = measure("contract_floor", servers, rs, reqs, variant)
        finally:
            servers.stop()  # SIGTERM: lifespan shutdown flushes the events still pending
        results["contract_floor"]["events_xadded"] = xadd_calls(rs) - xadds  # type: ignore[index]
        if args.fastapi_core:
            ports = [free_port() for _ in range(args.workers)]
            cmds = [
                (
                    [sys.executable, str(HERE / "fastapi_core.py"), "--port", str(pt)],
                    {**cmds[0][1], "FORKCAST_PORT": str(pt)},
                )
                for pt in ports
            ]
            servers = Servers(cmds, ports, Path(redis_dir))
            try:
                variant = argparse.Namespace(
                    **{**vars(args), "open_seconds": 0, "concurrency": args.fastapi_concurrency}
                )
                results["fastapi_core"] = measure("fastapi_core", servers, rs, reqs, variant)
            finally:
                servers.stop()
        if not args.skip_baseline:
            load_naive_layout(
                redis.Redis(port=rs.port), args.data, set().union(*(u for _, u, *_ in reqs_users))
            )
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
            servers = Servers(cmds, ports, Path(redis_dir))
            try:
                variant = argparse.Namespace(**{**vars(args), "concurrency": args.baseline_concurrency})
                results["baseline"] = measure("baseline", servers, rs, reqs, variant)
            finally:
                servers.stop()
    best = lambda r: max(c["req_per_s"] for c in r["closed_loop"])  # noqa: E731
    for other in ("baseline", "fastapi_core"):
        if other in results:
            results[f"max_ratio_vs_{other}"] = best(results["service"]) / best(results[other])  # type: ignore[arg-type]
    results["floor_ratio"] = floor_ratio(results, args.floor_concurrency[-1])
    print(json.dumps(results, indent=1))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
