"""Benchmark of the online-AUC job: CPU per prediction event and peak memory, against a naive baseline.

``python monitoring/benchmarks/bench_online_auc.py`` starts a private redis-server (forkcast_devservers) on a free
127.0.0.1 port, writes the
traffic of ``--predictions`` requests (10 candidates each, a feedback entry per candidate, as the simulator
emits; the requests of eight API keys in turn, so the per-key share cap is computed at every refresh and binds no
one), then drains it in two fresh child processes, each timed with getrusage (user + system CPU, peak RSS):

* ``job``: the real ``OnlineAuc`` (consumer groups, batched reads, windowed AUC refreshed every 5 s);
* ``naive``: one XREAD round trip per entry, a dict join, every pair kept, and the AUC recomputed from scratch
  over all pairs at every scrape (one per 15 s of traffic at 2,000 predictions/s).

The target (issue 9): 2,000 predictions/s with ≤ 20 % of one core, i.e. ≤ 100 µs of CPU per prediction
including its feedback. Redis' own CPU is not counted (it is another process, on another host in the cluster).
Lives beside the package, not in it: the job never imports it.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import redis

from forkcast_contract.streams import FEEDBACK_STREAM, PREDICTIONS_STREAM
from forkcast_devservers.servers import RedisServer
from forkcast_monitoring.events import parse_feedback, parse_prediction
from forkcast_monitoring.online_auc import OnlineAuc
from forkcast_monitoring.settings import MonitoringSettings

CANDIDATES, RATE, KEYS = 10, 2000.0, 8
SCRAPE_EVERY = int(15 * RATE)  # predictions between two scrapes at the target rate


def write_traffic(client: redis.Redis, predictions: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    start = time.time() - predictions / RATE - 5
    pipe = client.pipeline(transaction=False)
    for i in range(predictions):
        ts = start + i / RATE
        ids = rng.choice(5000, CANDIDATES, replace=False).tolist()
        scores = rng.normal(size=CANDIDATES)
        clicks = rng.random(CANDIDATES) < 1 / (1 + np.exp(-(scores - 2)))
        prediction: dict[Any, Any] = {
            "rid": f"r{i}",
            "ts": f"{ts:.6f}",
            "user": "1",
            "model": "v1",
            "fv": "f1",
        }
        key = f"app-{i % KEYS}"
        prediction |= {"ids": json.dumps(ids), "scores": json.dumps(scores.round(6).tolist()), "key_id": key}
        pipe.xadd(PREDICTIONS_STREAM, prediction)
        for r, c in zip(ids, clicks.tolist(), strict=True):
            feedback: dict[Any, Any] = {"rid": f"r{i}", "restaurant": str(r), "clicked": str(int(c))}
            pipe.xadd(FEEDBACK_STREAM, feedback | {"ts": f"{ts + 1:.6f}", "key_id": key})
        if i % 500 == 499:
            pipe.execute()
    pipe.execute()


def run_job(client: redis.Redis) -> float | None:
    settings = MonitoringSettings(environment="local", auc_window_s=3600.0, auc_attribution_s=600.0)
    job = OnlineAuc(client, settings)
    job.ensure_groups()
    while job.step(block_ms=None):
        pass
    job.compute(time.time())
    return job.estimates["v1"].auc


def _auc(scores: list[float], labels: list[bool]) -> float:
    order = np.argsort(np.asarray(scores), kind="mergesort")
    ranks = np.empty(len(order))
    ranks[order] = np.arange(1, len(order) + 1)
    y = np.asarray(labels)
    pos = int(y.sum())
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * (len(y) - pos)))


def run_naive(client: redis.Redis) -> float | None:
    served: dict[tuple[str, int], float] = {}
    scores: list[float] = []
    labels: list[bool] = []
    last = {PREDICTIONS_STREAM: "0", FEEDBACK_STREAM: "0"}
    seen, auc = 0, None
    for stream in (PREDICTIONS_STREAM, FEEDBACK_STREAM):
        while reply := cast(list[Any], client.xread({stream: last[stream]}, count=1)):
            entry_id, fields = reply[0][1][0]
            last[stream] = entry_id
            if stream == PREDICTIONS_STREAM:
                p = parse_prediction(fields)
                if p is not None:
                    served.update({(p.request_id, r): s for r, s in p.scores.items()})
                continue
            f = parse_feedback(fields)
            if f is not None and (f.request_id, f.restaurant_id) in served:
                scores.append(served[(f.request_id, f.restaurant_id)])
                labels.append(f.clicked)
                seen += 1
                if seen % (SCRAPE_EVERY * CANDIDATES) == 0:
                    auc = _auc(scores, labels)
    return _auc(scores, labels) if labels else auc


def child(impl: str, url: str, predictions: int) -> None:
    client = redis.Redis.from_url(url)
    before = resource.getrusage(resource.RUSAGE_SELF)
    auc = (run_job if impl == "job" else run_naive)(client)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(
        json.dumps(
            {"impl": impl, "cpu_s": cpu, "rss_mib": after.ru_maxrss / 1024, "auc": auc, "n": predictions}
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python monitoring/benchmarks/bench_online_auc.py", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--predictions", type=int, default=10_000, help="requests of traffic to drain")
    parser.add_argument("--child", choices=["job", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.redis_url, args.predictions)
        return 0
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp)) as server:
        write_traffic(redis.Redis.from_url(server.url), args.predictions)
        results = {}
        for impl in ("job", "naive"):
            cmd = [sys.executable, __file__, "--child", impl, "--redis-url", server.url]
            out = subprocess.run(
                [*cmd, "--predictions", str(args.predictions)], capture_output=True, text=True, check=True
            )
            results[impl] = json.loads(out.stdout.strip().splitlines()[-1])
    report(results)
    return 0


def report(results: dict[str, dict[str, float]]) -> None:
    job = results["job"]
    per = {k: 1e6 * r["cpu_s"] / r["n"] for k, r in results.items()}
    print(f"predictions drained: {int(job['n']):,} (x{CANDIDATES} feedback entries)")
    for k, r in results.items():
        core = per[k] * RATE / 1e6
        print(
            f"{k:>6}: {per[k]:7.1f} µs CPU/prediction = {100 * core:5.1f} % of a core at 2,000/s, "
            f"peak RSS {r['rss_mib']:.0f} MiB, AUC {r['auc']:.4f}"
        )
    print(
        f"ratio naive/job CPU: {per['naive'] / per['job']:.1f}x; target ≤ 100 µs/prediction: "
        f"{'met' if per['job'] <= 100 else 'NOT met'}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
