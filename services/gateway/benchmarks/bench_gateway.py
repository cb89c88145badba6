"""Gateway end to end (issues 8, 19): gateway + inference + Redis on the real workload, against inference direct and
against a floor server on the gateway's own stack.

Starts its own redis-server (loaded by `forkcast-features load`), one `forkcast-inference`, one `forkcast-gateway`
(auth, rate limit, metrics and access log on) and the floor server (floor_server.py: uvicorn with the gateway's
HTTP protocol, reading each request, forwarding it over the gateway's pooled keep-alive connections to the same
inference endpoint and returning its body — no auth, limit, validation, ids, metrics or log). First it checks that
the gateway's answers are the inference's, byte for byte, on the first --check requests. Then, for each target
(direct = baseline, floor, gateway), a closed loop at --concurrency (default 16) for --seconds with the dataset's
real requests (1,000 candidates each) prints throughput, p50/p95, and for the floor and the gateway their server
CPU µs per request; the **floor ratio** is gateway req/s ÷ floor req/s (issue 19: ≥ 0.75; gateway CPU ≤ 220 µs per
request). Then an open loop through the gateway at --rate req/s for --open-seconds (latency from the *scheduled*
send time: ``forkcast_devservers.load``); last, the time to a 503 with a dead upstream. Everything runs on the same
cores, the load generator too: read the ratios and the CPU per request, not the absolute req/s.

    python services/gateway/benchmarks/bench_gateway.py --data data/small --model-dir DIR
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

import aiohttp
import numpy as np
import polars as pl

from forkcast_devservers.load import open_loop
from forkcast_devservers.ports import free_port
from forkcast_devservers.process import Proc, cpu_seconds, spawn, stop
from forkcast_devservers.ready import http_ok, wait_until
from forkcast_devservers.servers import RedisServer
from forkcast_gateway.auth import hash_key

BIN = Path(sys.executable).parent
KEY = "bench-key"


def start(cmd: str, env: dict[str, str], port: int, log: Path, probe: str = "/readyz") -> Proc:
    """``cmd`` from this environment's bin folder, returned once ``probe`` answers 2xx (stopped if it never does)."""
    proc = spawn([str(BIN / cmd)], env={**os.environ, **env}, log=log)
    url = f"http://127.0.0.1:{port}{probe}"
    try:
        wait_until(lambda: http_ok(url), timeout_s=120, what=f"{cmd} {url}", proc=proc)
    except BaseException:
        stop(proc)
        raise
    return proc


async def answers(url: str, reqs: list[tuple[str, bytes]]) -> list[tuple[int, bytes]]:
    """(status, body) of each request, one at a time."""
    headers = {"content-type": "application/json", "x-api-key": KEY}
    out = []
    async with aiohttp.ClientSession() as s:
        for user, body in reqs:
            async with s.post(f"{url}/recommend/{user}", data=body, headers=headers) as r:
                out.append((r.status, await r.read()))
    return out


async def closed_loop(url: str, reqs: list[tuple[str, bytes]], conc: int, seconds: float) -> dict[str, float]:
    lat: list[float] = []
    errors = 0
    headers = {"content-type": "application/json", "x-api-key": KEY}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conc)) as s:
        stop = time.perf_counter() + seconds

        async def worker(k: int) -> None:
            nonlocal errors
            i = k
            while time.perf_counter() < stop:
                user, body = reqs[i % len(reqs)]
                t0 = time.perf_counter()
                async with s.post(f"{url}/recommend/{user}", data=body, headers=headers) as r:
                    await r.read()
                    errors += r.status not in (200, 404)
                lat.append(time.perf_counter() - t0)
                i += conc

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(conc)))
        wall = time.perf_counter() - t0
    a = np.array(lat) * 1000
    return {
        "req_s": len(lat) / wall,
        "p50_ms": float(np.percentile(a, 50)),
        "p95_ms": float(np.percentile(a, 95)),
        "errors": errors,
        "n": len(lat),
    }


def raw_requests(reqs: list[tuple[str, bytes]]) -> list[bytes]:
    """Whole HTTP/1.1 requests with the API key, as bench_serve's open loop sends them."""
    return [
        (
            f"POST /recommend/{user} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"X-API-Key: {KEY}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
        for user, body in reqs
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="dataset dir (requests.parquet, features)")
    ap.add_argument("--model-dir", type=Path, required=True, help="a model version's files (serving form)")
    ap.add_argument("--concurrency", type=int, default=16, help="closed-loop connections")
    ap.add_argument(
        "--check", type=int, default=200, help="requests whose answers must be identical via gateway"
    )
    ap.add_argument("--seconds", type=float, default=10.0, help="duration of each closed loop")
    ap.add_argument("--rate", type=float, default=30.0, help="open-loop rate through the gateway, req/s")
    ap.add_argument(
        "--open-seconds", type=float, default=60.0, help="open-loop duration (0: leave the open loop out)"
    )
    args = ap.parse_args()
    df = pl.read_parquet(args.data / "requests.parquet").head(2000)
    reqs = []
    for row in df.iter_rows(named=True):
        uid = row.pop("user_id")
        reqs.append((f"u{uid}", json.dumps(row).encode()))
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp) / "redis") as redis_server:
        # The default environment, production, refuses FORKCAST_MODEL_DIR, a loopback Redis and development keys.
        env = {"REDIS_URL": redis_server.url, "FORKCAST_ENVIRONMENT": "local"}
        subprocess.run(
            [str(BIN / "forkcast-features"), "load", "--data", str(args.data), "--activate", "--no-progress"],
            env={**os.environ, **env}, check=True, capture_output=True,
        )  # fmt: skip
        keys = Path(tmp) / "keys"
        keys.write_text(f"bench:{hash_key(KEY)}\n")
        ip, gp = free_port(), free_port()
        model_dir = str(args.model_dir.resolve())  # the service resolves it as a file URI: must be absolute
        inf_env = {
            **env,
            "FORKCAST_PORT": str(ip),
            "FORKCAST_MODEL_DIR": model_dir,
            "FORKCAST_LOG_LEVEL": "WARNING",
        }
        inf = start("forkcast-inference", inf_env, ip, Path(tmp) / "inference.log")
        gw_env = {**env, "FORKCAST_PORT": str(gp), "FORKCAST_UPSTREAMS": f"http://127.0.0.1:{ip}",
                  "FORKCAST_API_KEYS_FILE": str(keys), "FORKCAST_RATE_PER_S": "100000",
                  "FORKCAST_RATE_BURST": "100000", "FORKCAST_LOG_LEVEL": "INFO"}  # fmt: skip
        gw = start("forkcast-gateway", gw_env, gp, Path(tmp) / "gateway.log")
        fp = free_port()
        floor = spawn(
            [sys.executable, str(Path(__file__).with_name("floor_server.py")), "--port", str(fp),
             "--upstream", f"http://127.0.0.1:{ip}"],
            env={**os.environ, "OPENBLAS_NUM_THREADS": "1"}, log=Path(tmp) / "floor.log",
        )  # fmt: skip
        try:
            wait_until(
                lambda: http_ok(f"http://127.0.0.1:{fp}/healthz"), timeout_s=60, what="floor", proc=floor
            )
            out: dict[str, object] = {"date": time.strftime("%Y-%m-%d"), "requests": len(reqs)}
            sample = reqs[: args.check]
            direct_answers = asyncio.run(answers(f"http://127.0.0.1:{ip}", sample))
            gateway_answers = asyncio.run(answers(f"http://127.0.0.1:{gp}", sample))
            differ = [
                i for i, (a, b) in enumerate(zip(direct_answers, gateway_answers, strict=True)) if a != b
            ]
            if differ:
                raise SystemExit(f"gateway answers differ from inference direct at requests {differ[:10]}")
            out["identical_answers"] = f"{len(sample)} of {len(sample)}"
            for port in (ip, fp, gp):  # warm up
                asyncio.run(closed_loop(f"http://127.0.0.1:{port}", reqs, args.concurrency, 2))
            direct = asyncio.run(closed_loop(f"http://127.0.0.1:{ip}", reqs, args.concurrency, args.seconds))
            c0 = cpu_seconds(floor.pid)
            at_floor = asyncio.run(
                closed_loop(f"http://127.0.0.1:{fp}", reqs, args.concurrency, args.seconds)
            )
            floor_cpu = cpu_seconds(floor.pid) - c0
            c0 = cpu_seconds(gw.pid)
            via = asyncio.run(closed_loop(f"http://127.0.0.1:{gp}", reqs, args.concurrency, args.seconds))
            gw_cpu = cpu_seconds(gw.pid) - c0
            single_direct = asyncio.run(closed_loop(f"http://127.0.0.1:{ip}", reqs, 1, args.seconds / 2))
            single_via = asyncio.run(closed_loop(f"http://127.0.0.1:{gp}", reqs, 1, args.seconds / 2))
            out |= {
                "concurrency": args.concurrency,
                "inference_direct": direct,
                "floor": at_floor,
                "through_gateway": via,
                "throughput_ratio": via["req_s"] / direct["req_s"],
                "floor_ratio": via["req_s"] / at_floor["req_s"],
                "gateway_cpu_us_per_request": gw_cpu / via["n"] * 1e6,
                "floor_cpu_us_per_request": floor_cpu / at_floor["n"] * 1e6,
                "added_p50_ms_concurrency_1": single_via["p50_ms"] - single_direct["p50_ms"],
                "concurrency_1": {"direct": single_direct, "gateway": single_via},
            }
            print(
                f"floor ratio {out['floor_ratio']:.2f} (gateway {via['req_s']:,.0f} req/s ÷ floor "
                f"{at_floor['req_s']:,.0f} req/s at {args.concurrency} connections); server CPU per request: "
                f"gateway {out['gateway_cpu_us_per_request']:.0f} µs, floor {out['floor_cpu_us_per_request']:.0f} µs",
                flush=True,
            )
            if args.open_seconds > 0:
                c0 = cpu_seconds(gw.pid)
                opened = asyncio.run(open_loop([gp], raw_requests(reqs), args.rate, args.open_seconds))
                opened["gateway_cpu_us_per_request"] = (
                    (cpu_seconds(gw.pid) - c0) / (opened["requests"] or 1) * 1e6
                )
                out["open_loop_through_gateway"] = opened
        finally:
            stop(floor)
            stop(gw)
        # Dead upstream: the inference process is stopped; each request must be a 503 fast.
        stop(inf)
        # Not ready (its upstream is dead): waited on by /healthz.
        gw = start("forkcast-gateway", gw_env, gp, Path(tmp) / "gateway-2.log", probe="/healthz")
        try:
            times = []
            for user, body in reqs[:50]:
                hdrs = {"x-api-key": KEY, "content-type": "application/json"}
                req = urllib.request.Request(
                    f"http://127.0.0.1:{gp}/recommend/{user}", data=body, headers=hdrs
                )
                t0 = time.perf_counter()
                try:
                    urllib.request.urlopen(req, timeout=5)
                    status = 200
                except urllib.error.HTTPError as exc:
                    status = exc.code
                times.append(time.perf_counter() - t0)
                assert status == 503, status
            # The first request after start also pays the gateway's lazy set-up (imports, first validation):
            # reported apart, so a slow one-off is not mistaken for the steady answer time.
            out["dead_upstream_503_ms"] = {
                "first": times[0] * 1000,
                "max_after_first": max(times[1:]) * 1000,
                "p50": float(np.median(times)) * 1000,
            }
        finally:
            stop(gw)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
