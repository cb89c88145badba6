"""Served-log compaction throughput (issue 16.3: ≥ 20,000 events/s compacted on this machine).

Real redis-server and weed mini from forkcast_devservers. The events are written at the producers' encoding
(forkcast_lake.testing: inference's prediction record with 10 served restaurants, one gateway feedback record per
served restaurant, so 11 events per prediction). Measured in the same run, on the same events:

* floor: the events XRANGE'd and decoded into Arrow tables (forkcast_lake.served_log), nothing written — what
  any compaction must at least do;
* compaction: ``Compactor`` from the committed position to the end — read, decode, one Delta commit per batch
  (parquet to S3, log put-if-absent), XTRIM after each commit.

While the compaction runs, the platform serves: a real ``forkcast-inference`` (the dataset's features loaded into a
features redis-server by ``forkcast-features load``, the model from ``make``'s bench-model rule) behind a real
``forkcast-gateway``, both writing their events to the same events redis-server the job compacts, and an open loop
(``forkcast_devservers.load.open_loop``, in a process of its own so its CPU is not charged to the job) sending the
dataset's requests (1,000 candidates each) through the gateway at ``--serve-rps`` from before the compaction starts
until after it ends. The same open loop runs first with no compaction, so the serving p95 is read against its own
baseline. Printed: events/s, CPU µs per event of the compacting process and of redis-server + weed mini (from
/proc), the ratio of compaction to floor, and the serving p95 / failures without and during the compaction. The
2-core machine is shared: figures move 2-3x over a day, the ratios less.

    .venv/bin/python lake/benchmarks/bench_compact.py --data data/small --model-dir runs/bench-model
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import tempfile
import time
from multiprocessing.queues import Queue
from pathlib import Path
from typing import cast

import redis
from deltalake import DeltaTable

from forkcast_contract.streams import FEEDBACK_STREAM, PREDICTIONS_STREAM
from forkcast_devservers.load import open_loop
from forkcast_devservers.ports import free_port
from forkcast_devservers.process import Proc, spawn, stop
from forkcast_devservers.ready import http_ok, wait_until
from forkcast_devservers.servers import RedisServer, Seaweed
from forkcast_gateway.testing import KEY, write_keys
from forkcast_inference.testing import load_features, start_inference
from forkcast_lake.compact import Compactor
from forkcast_lake.compact_settings import CompactSettings
from forkcast_lake.served_log import SERVED_TABLES, Entry
from forkcast_lake.storage import storage_options
from forkcast_lake.testing import produce
from forkcast_local.loadgen import request_bodies

STREAMS = {"predictions": PREDICTIONS_STREAM, "feedback": FEEDBACK_STREAM}
BIN = Path(sys.executable).parent
_TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float:
    """user + system CPU seconds of process ``pid`` (its threads included), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def floor(client: redis.Redis, read_count: int) -> int:
    """XRANGE every stream to its end and decode each chunk; returns how many entries were decoded."""
    reader = redis.Redis(connection_pool=client.connection_pool)
    reader.set_response_callback("XRANGE", lambda response, **_: response)
    done = 0
    for spec in SERVED_TABLES:
        start = "-"
        while True:
            # Raw replies (the callback above): (id, [field, value, …]) pairs of bytes, as the job reads them.
            entries = cast(list[Entry], reader.xrange(spec.stream, min=start, max="+", count=read_count))
            if not entries:
                break
            spec.decode(entries)
            done += len(entries)
            start = "(" + entries[-1][0].decode()
    return done


def raw_requests(data: Path, limit: int = 2000) -> list[bytes]:
    """Whole HTTP/1.1 POST /recommend requests with the API key, for ``open_loop``: the dataset's first ``limit``
    requests in the public API's shape (forkcast_local.loadgen.request_bodies)."""
    return [
        (
            f"POST /recommend/{user} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"X-API-Key: {KEY}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
        for user, body in request_bodies(data / "requests.parquet", limit)
    ]


def _serve(port: int, reqs: list[bytes], rate: float, seconds: float, out: Queue[dict[str, float]]) -> None:
    """The open loop through the gateway; runs in a child process, so its CPU is not the job's."""
    out.put(asyncio.run(open_loop([port], reqs, rate, seconds)))


class Serving:
    """An open loop at ``rate`` req/s through the gateway on ``port`` for ``seconds``, in a child process."""

    def __init__(self, port: int, reqs: list[bytes], rate: float, seconds: float) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.out: Queue[dict[str, float]] = ctx.Queue()
        self.proc = ctx.Process(target=_serve, args=(port, reqs, rate, seconds, self.out), daemon=True)
        self.seconds = seconds

    def start(self) -> float:
        """Start it; returns the perf_counter time its sending begins (open_loop starts 0.1 s after it runs)."""
        self.proc.start()
        return time.perf_counter() + 0.1

    def result(self) -> dict[str, float]:
        """requests, errors (non-200), p50/p95/p99 ms from the scheduled send time (open_loop's summary)."""
        summary = self.out.get(timeout=self.seconds + 120)
        self.proc.join(10)
        return summary


def start_gateway(env: dict[str, str], port: int, log: Path) -> Proc:
    """A real ``forkcast-gateway`` on 127.0.0.1:``port``, returned once /readyz answers (its upstream is up)."""
    proc = spawn([str(BIN / "forkcast-gateway")], env={**os.environ, **env}, log=log)
    try:
        wait_until(
            lambda: http_ok(f"http://127.0.0.1:{port}/readyz"),
            timeout_s=120,
            what="forkcast-gateway",
            proc=proc,
        )
    except BaseException:
        stop(proc)
        raise
    return proc


def entries_added(client: redis.Redis, stream: str) -> int:
    """Every XADD ever made to ``stream``, trimmed entries included (XINFO STREAM entries-added, Redis >= 7.0);
    0 for a stream never written (the feature-updates stream here)."""
    return int(client.xinfo_stream(stream)["entries-added"]) if client.exists(stream) else 0


def drain(compactor: Compactor) -> None:
    """Compact everything in the streams now, and commit it."""
    compactor.start()
    while compactor.step():
        pass
    compactor.flush_all()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="dataset dir (features, requests.parquet)")
    parser.add_argument(
        "--model-dir", type=Path, required=True, help="a model version's files (serving form)"
    )
    parser.add_argument("--predictions", type=int, default=20_000, help="predictions (x11 events) to compact")
    parser.add_argument(
        "--serve-rps", type=float, default=30.0, help="requests/s through the gateway meanwhile"
    )
    parser.add_argument(
        "--serve-seconds",
        type=float,
        default=0.0,
        help="open-loop window, which must hold the whole compaction (0: sized from the floor's time)",
    )
    parser.add_argument("--baseline-seconds", type=float, default=15.0, help="open loop with no compaction")
    parser.add_argument("--batch-entries", type=int, default=50_000, help="FORKCAST_COMPACT_BATCH_ENTRIES")
    parser.add_argument("--read-count", type=int, default=10_000, help="FORKCAST_COMPACT_READ_COUNT")
    args = parser.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    reqs = raw_requests(args.data)
    with (
        tempfile.TemporaryDirectory() as tmp,
        RedisServer(Path(tmp) / "redis") as rs,
        RedisServer(Path(tmp) / "redis-features") as features,
        Seaweed(Path(tmp) / "s3") as s3,
    ):
        s3.create_bucket("lake")
        for name, value in s3.client_env("lake").items():
            os.environ[name] = value
        # The events Redis is apart from the features Redis, as in the cluster (issue 18.2); inference and the
        # gateway write their events (predictions, feedback) into the one the job compacts.
        os.environ["FORKCAST_EVENTS_REDIS_URL"] = rs.url
        load_features(features.url, args.data)
        inference_port, gateway_port = free_port(), free_port()
        inference = start_inference(
            features.url, args.model_dir.resolve(), inference_port, Path(tmp) / "inference.log", timeout_s=120
        )
        gateway_env = {
            "FORKCAST_ENVIRONMENT": "local",  # the default, production, refuses a loopback Redis and dev keys
            "REDIS_URL": features.url,
            "FORKCAST_HOST": "127.0.0.1",
            "FORKCAST_PORT": str(gateway_port),
            "FORKCAST_UPSTREAMS": f"http://127.0.0.1:{inference_port}",
            "FORKCAST_API_KEYS_FILE": str(write_keys(Path(tmp) / "keys", {"bench": (KEY, "")})),
            "FORKCAST_RATE_PER_S": "100000",
            "FORKCAST_RATE_BURST": "100000",
            "FORKCAST_LOG_LEVEL": "WARNING",
        }
        gateway = start_gateway(gateway_env, gateway_port, Path(tmp) / "gateway.log")
        try:
            settings = CompactSettings(
                environment="local",
                lake_uri="s3://lake/bench",
                events_redis_url=rs.url,
                block_ms=10,
                batch_entries=args.batch_entries,
                batch_seconds=3600,
                read_count=args.read_count,
                keep_seconds=0,  # trim all that is committed: the trims are part of the measured work
            )
            client = redis.Redis.from_url(rs.url)
            # Warm-up: create the tables, so the measured run is the steady state (commits to existing tables).
            produce(client, STREAMS, 50, time.time(), prefix="warm")
            compactor = Compactor(client, settings)
            drain(compactor)

            baseline = Serving(gateway_port, reqs, args.serve_rps, args.baseline_seconds)
            baseline.start()
            alone = baseline.result()
            drain(compactor)  # the baseline's prediction events: not part of the measured backlog

            served = produce(client, STREAMS, args.predictions, time.time())
            events = len(served.predictions) + len(served.feedback)

            t0, c0 = time.perf_counter(), time.process_time()
            floor_events = floor(client, args.read_count)
            floor_wall, floor_cpu = time.perf_counter() - t0, time.process_time() - c0
            assert floor_events == events, (floor_events, events)

            assert rs.proc is not None and s3.proc is not None
            # The window holds the compaction with a margin, and not much more, so that most of the requests
            # measured are served while it runs: 2 s of lead, the floor's time / 0.5 (compaction ran at
            # 0.68-0.83 of the floor's rate in earlier runs), 3 s of tail.
            window = args.serve_seconds or 2.0 + floor_wall / 0.5 + 3.0
            serving = Serving(gateway_port, reqs, args.serve_rps, window)
            load_start = serving.start()
            time.sleep(2.0)  # the open loop is sending before the compaction starts
            servers0 = proc_cpu_s(rs.proc.pid) + proc_cpu_s(s3.proc.pid)
            t0, c0 = time.perf_counter(), time.process_time()
            compactor.start()
            compacted = 0
            while compacted < events:  # the backlog; the platform's events keep arriving behind it
                compacted += compactor.step()
            compactor.flush_all()
            t1 = time.perf_counter()
            wall, cpu = t1 - t0, time.process_time() - c0
            servers = proc_cpu_s(rs.proc.pid) + proc_cpu_s(s3.proc.pid) - servers0
            during = serving.result()
            if t1 > load_start + window:
                raise SystemExit(
                    f"the compaction ({wall:.1f} s) outlasted the serving window: raise --serve-seconds"
                )
            drain(compactor)  # and the events served meanwhile, so the counts can be checked
        finally:
            stop(gateway)
            stop(inference)

        options = storage_options(settings)
        rows = sum(
            DeltaTable(f"s3://lake/bench/{spec.table}", storage_options=options).count()
            for spec in SERVED_TABLES
        )
        # Every XADD ever made to the streams (Redis counts them: XINFO STREAM entries-added), by the
        # synthetic producer, inference and the gateway alike: each must be exactly one row.
        added = sum(entries_added(client, spec.stream) for spec in SERVED_TABLES)
        assert rows == added, f"table rows {rows} != entries added to the streams {added}"
        live = entries_added(client, PREDICTIONS_STREAM) - 50 - len(served.predictions)
        floor_rate, rate = floor_events / floor_wall, compacted / wall
        floor_us, job_us, servers_us = (
            floor_cpu / events * 1e6,
            cpu / compacted * 1e6,
            servers / compacted * 1e6,
        )
        print(
            f"bench-lake compact: {events:,} events ({args.predictions:,} predictions + feedback) compacted "
            f"while the platform served {args.serve_rps:g} req/s through gateway + inference "
            f"({live:,} prediction events written by inference in the baseline and serving windows)"
        )
        print(f"  floor (XRANGE + decode, no write): {floor_rate:,.0f} events/s, {floor_us:.1f} CPU µs/event")
        print(
            f"  compaction (read, decode, Delta commit to weed mini, XTRIM): {rate:,.0f} events/s, "
            f"{job_us:.1f} CPU µs/event in the job + {servers_us:.1f} in redis-server and weed mini"
        )
        print(
            f"  ratio compaction/floor: {rate / floor_rate:.2f} of the floor's rate, "
            f"{job_us / floor_us:.2f}x its CPU per event; every row checked: {rows:,}"
        )
        print(
            f"  serving at {args.serve_rps:g} req/s (open loop, latency from the schedule): "
            f"p95 {during['p95_ms']:.1f} ms, {int(during['errors'])} failures of {int(during['requests'])} "
            f"in a window holding the compaction ({wall:.1f} s of the {window:.1f} s window); "
            f"p95 {alone['p95_ms']:.1f} ms, {int(alone['errors'])} failures of {int(alone['requests'])} "
            f"without it; ratio {during['p95_ms'] / alone['p95_ms']:.2f}"
        )


if __name__ == "__main__":
    main()
