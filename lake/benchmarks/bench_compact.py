"""Served-log compaction throughput (issue 16.3: ≥ 20,000 events/s compacted on this machine).

Real redis-server and weed mini from forkcast_devservers. The events are written at the producers' encoding
(forkcast_lake.testing: inference's prediction record with 10 served restaurants, one gateway feedback record per
served restaurant, so 11 events per prediction). Measured in the same run, on the same events:

* floor: the events XRANGE'd and decoded into Arrow tables (forkcast_lake.served_log), nothing written — what
  any compaction must at least do;
* compaction: ``Compactor`` from the committed position to the end — read, decode, one Delta commit per batch
  (parquet to S3, log put-if-absent), XTRIM after each commit.

While the compaction runs, a producer thread keeps appending the event stream that serving ``--serve-rps`` requests
a second writes (one prediction + 10 feedback events per request), so Redis is also busy with the platform's writes.
Printed: events/s, CPU µs per event of the compacting process and of redis-server + weed mini (from /proc), and the
ratio of compaction to floor. The 2-core machine is shared: figures move 2-3x over a day, the ratio less.

    .venv/bin/python lake/benchmarks/bench_compact.py --predictions 20000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import redis
from deltalake import DeltaTable

from forkcast_contract.streams import FEEDBACK_STREAM, PREDICTIONS_STREAM
from forkcast_devservers.servers import RedisServer, Seaweed
from forkcast_lake.compact import Compactor
from forkcast_lake.compact_settings import CompactSettings
from forkcast_lake.served_log import SERVED_TABLES
from forkcast_lake.storage import storage_options
from forkcast_lake.testing import produce

STREAMS = {"predictions": PREDICTIONS_STREAM, "feedback": FEEDBACK_STREAM}
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
            entries = reader.xrange(spec.stream, min=start, max="+", count=read_count)
            if not entries:
                break
            spec.decode(entries)
            done += len(entries)
            start = "(" + entries[-1][0].decode()
    return done


def serve_load(client: redis.Redis, rps: float, stop: threading.Event, produced: list[int]) -> None:
    """The platform's stream writes at ``rps`` requests/s (one prediction + its feedback each), until ``stop``."""
    n, started = 0, time.monotonic()
    while not stop.is_set():
        due = int((time.monotonic() - started) * rps) - n
        if due > 0:
            produce(client, STREAMS, due, time.time(), prefix=f"live{n}-")
            n += due
        stop.wait(0.05)
    produced.append(n)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--predictions", type=int, default=20_000, help="predictions (x11 events) to compact")
    parser.add_argument(
        "--serve-rps", type=float, default=30.0, help="requests/s of platform writes meanwhile"
    )
    parser.add_argument("--batch-entries", type=int, default=50_000, help="FORKCAST_COMPACT_BATCH_ENTRIES")
    parser.add_argument("--read-count", type=int, default=10_000, help="FORKCAST_COMPACT_READ_COUNT")
    args = parser.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    with (
        tempfile.TemporaryDirectory() as tmp,
        RedisServer(Path(tmp) / "redis") as rs,
        Seaweed(Path(tmp) / "s3") as s3,
    ):
        s3.create_bucket("lake")
        for name, value in s3.client_env("lake").items():
            os.environ[name] = value
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
        compactor.start()
        while compactor.step():
            pass
        compactor.flush_all()

        served = produce(client, STREAMS, args.predictions, time.time())
        events = len(served.predictions) + len(served.feedback)

        t0, c0 = time.perf_counter(), time.process_time()
        floor_events = floor(client, args.read_count)
        floor_wall, floor_cpu = time.perf_counter() - t0, time.process_time() - c0
        assert floor_events == events, (floor_events, events)

        stop, live = threading.Event(), []
        load = threading.Thread(
            target=serve_load, args=(redis.Redis.from_url(rs.url), args.serve_rps, stop, live)
        )
        assert rs.proc is not None and s3.proc is not None
        servers0 = proc_cpu_s(rs.proc.pid) + proc_cpu_s(s3.proc.pid)
        load.start()
        t0, c0 = time.perf_counter(), time.process_time()
        compactor.start()
        compacted = 0
        while compacted < events:  # the backlog; the live load keeps arriving behind it
            compacted += compactor.step()
        compactor.flush_all()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        servers = proc_cpu_s(rs.proc.pid) + proc_cpu_s(s3.proc.pid) - servers0
        stop.set()
        load.join()
        compactor.start()  # and the live events written meanwhile, so the counts can be checked
        while compactor.step():
            pass
        compactor.flush_all()

        options = storage_options(settings)
        rows = sum(
            DeltaTable(f"s3://lake/bench/{spec.table}", storage_options=options).count()
            for spec in SERVED_TABLES
        )
        expected = 50 * 11 + events + live[0] * 11
        assert rows == expected, f"table rows {rows} != produced {expected}"
        floor_rate, rate = floor_events / floor_wall, compacted / wall
        floor_us, job_us, servers_us = (
            floor_cpu / events * 1e6,
            cpu / compacted * 1e6,
            servers / compacted * 1e6,
        )
        print(
            f"bench-lake compact: {events:,} events ({args.predictions:,} predictions + feedback), "
            f"{args.serve_rps:g} req/s of platform writes meanwhile ({live[0] * 11:,} events)"
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


if __name__ == "__main__":
    main()
