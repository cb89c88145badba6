"""``forkcast-lake compact``: run the served-log compaction (forkcast_lake.compact) as a job or once.

As a Deployment it runs until stopped, serving /metrics, /healthz and /readyz; a Redis or S3 error is logged, the
job waits (backing off up to 10 s) and starts again from the committed positions, so an outage never ends the
process and never duplicates a row. ``--once`` compacts what the streams hold now and exits (a drill, a
backfill, the benchmark).
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from types import FrameType

import redis

from forkcast_contract.settings import redacted_url
from forkcast_lake.compact import Compactor
from forkcast_lake.compact_metrics import CompactMetrics, start_server
from forkcast_lake.compact_settings import CompactSettings, get_settings

log = logging.getLogger("forkcast_lake.compact")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "compact",
        help="move prediction events, feedback and feature updates from Redis streams into lake tables",
        description=(
            "Compact the events Redis streams (FORKCAST_EVENTS_REDIS_URL, else REDIS_URL) into the served/* "
            "Delta tables under FORKCAST_LAKE_URI, exactly once, trimming each stream only below what is "
            "committed and what every consumer group (the online-AUC job's) has read or acknowledged. Batches close at "
            "FORKCAST_COMPACT_BATCH_ENTRIES entries or FORKCAST_COMPACT_BATCH_SECONDS seconds."
        ),
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="compact what the streams hold now, commit it and exit (no metrics server)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    client = redis.Redis.from_url(settings.events_url, socket_timeout=max(5.0, settings.block_ms / 1000 + 5))
    log.info("compacting %s into %s", redacted_url(settings.events_url), settings.lake_uri)
    if args.once:
        compact_once(client, settings)
        return 0
    metrics = CompactMetrics()
    start_server(metrics, settings.metrics_host, settings.metrics_port)
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    run_forever(Compactor(client, settings, metrics), stop)
    return 0


def compact_once(client: redis.Redis, settings: CompactSettings) -> Compactor:
    """Read until every stream is drained, commit, trim; returns the compactor (its metrics) for the caller."""
    compactor = Compactor(client, settings)
    compactor.start()
    while compactor.step():
        pass
    compactor.flush_all()
    return compactor


def run_forever(compactor: Compactor, stop: threading.Event, lag_every_s: float = 5.0) -> None:
    """Step until ``stop``; on SIGTERM the open batches are committed before the process ends."""
    backoff, started, next_lag = 0.5, False, 0.0
    while not stop.is_set():
        try:
            if not started:
                compactor.start()
                started = True
            compactor.step()
            compactor.metrics.ready_error = None
            backoff = 0.5
        except (redis.RedisError, OSError, Exception) as exc:
            compactor.metrics.ready_error = f"{type(exc).__name__}: {exc}"
            log.warning("compaction step failed (%s); restarting from the committed positions", exc)
            started = False
            stop.wait(backoff)
            backoff = min(backoff * 2, 10.0)
        # In a try of its own, from Redis alone: during an S3 outage (start() or step() failing above) the lag,
        # the last-commit time and the lost-entry count keep moving, so the alerts on them can fire.
        if time.monotonic() >= next_lag:
            next_lag = time.monotonic() + lag_every_s
            try:
                compactor.check_streams()
            except Exception as exc:
                log.warning("checking the streams failed (%s)", exc)
    try:
        compactor.flush_all()
    except Exception as exc:
        log.warning("final commit failed (%s); the next start re-reads it", exc)
