"""Benchmark of the online-AUC job: CPU per prediction event and peak memory, against a naive baseline.

``python monitoring/benchmarks/bench_online_auc.py --data data/small`` starts a private redis-server
(forkcast_devservers) on a free 127.0.0.1 port, writes the traffic of ``--predictions`` requests, then drains it in
two fresh child processes, each timed with getrusage (user + system CPU) and measured by its own peak RSS (VmHWM).

The traffic is the size real answers have: prediction i answers request i mod n of the dataset's
``requests.parquet`` as the inference would (its candidates within ``max_dist`` by the same bounding box and
haversine, duplicates once, truncated to ``size``: 15-80 restaurants, 42 on average, on the small and full presets),
and carries a feedback entry per served restaurant, as the simulator emits; the requests of eight API keys take
turns, so the per-key share cap is computed at every refresh and binds no one. Both drains read the same way:

* ``job``: the real ``OnlineAuc`` (consumer groups, XREADGROUP of ``READ_COUNT`` entries, windowed AUC refreshed
  every 5 s);
* ``naive``: XREAD of the same ``READ_COUNT`` entries per round trip, a dict per entry, a dict join, every pair
  kept, and the AUC recomputed from scratch over all pairs at every scrape (one per 15 s of traffic at 2,000
  predictions/s). Until 2026-12-05 it read one entry per round trip and the workload served 10 restaurants per
  prediction, which flattered the job (issue 19).

The target (issue 9): 2,000 predictions/s with ≤ 20 % of one core, i.e. ≤ 100 µs of CPU per prediction
including its feedback. Redis' own CPU is not counted (it is another process, on another host in the cluster).
Lives beside the package, not in it: the job never imports it.
"""

from __future__ import annotations

import argparse
import inspect
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import pyarrow.parquet as pq
import redis

from forkcast_contract.geo import within_bbox
from forkcast_contract.streams import FEEDBACK_STREAM, PREDICTIONS_STREAM
from forkcast_devservers.servers import RedisServer
from forkcast_monitoring.events import parse_feedback, parse_prediction
from forkcast_monitoring.online_auc import OnlineAuc
from forkcast_monitoring.settings import MonitoringSettings

RATE, KEYS = 2000.0, 8
SCRAPE_EVERY = int(15 * RATE)  # predictions between two scrapes at the target rate
# Entries per stream per round trip, for both drains: OnlineAuc.step's default, the one the job's loop runs with.
READ_COUNT: int = inspect.signature(OnlineAuc.step).parameters["count"].default


def served_answers(data: Path) -> list[list[int]]:
    """Each request's answer as the inference serves it: its in-range candidates, at most ``size`` of them.

    In-range is the inference's rule (forkcast_inference.ranking.select_in_range: candidates with a known id,
    duplicates once, the contract's bounding box then haversine within ``max_dist``); the order within an answer
    does not matter here (scores are drawn), so ids stay ascending.
    """
    coords = pq.read_table(
        data / "restaurant_features.parquet", columns=["restaurant_id", "latitude", "longitude"]
    )
    rid = coords.column("restaurant_id").to_numpy()
    lat = np.full(int(rid.max()) + 1, np.nan)
    lng = lat.copy()
    lat[rid], lng[rid] = coords.column("latitude").to_numpy(), coords.column("longitude").to_numpy()
    requests = pq.read_table(data / "requests.parquet")
    column = requests.column("candidate_restaurant_ids").combine_chunks()
    flat, offsets = column.flatten().to_numpy(), column.offsets.to_numpy()
    answers = []
    for i, (la, lo, size, max_dist) in enumerate(
        zip(
            *(requests.column(c).to_pylist() for c in ("latitude", "longitude", "size", "max_dist")),
            strict=True,
        )
    ):
        ids = np.unique(flat[offsets[i] : offsets[i + 1]])
        ids = ids[(ids >= 0) & (ids < len(lat))]
        near = ids[within_bbox(la, lo, lat[ids], lng[ids], float(max_dist))]
        answers.append(near[:size].tolist())
    return answers


def write_traffic(client: redis.Redis, predictions: int, answers: list[list[int]], seed: int = 0) -> int:
    """Write the predictions and their feedback; returns the number of feedback entries."""
    rng = np.random.default_rng(seed)
    start = time.time() - predictions / RATE - 5
    pipe = client.pipeline(transaction=False)
    feedback_entries = 0
    for i in range(predictions):
        ts = start + i / RATE
        ids = answers[i % len(answers)]
        feedback_entries += len(ids)
        scores = rng.normal(size=len(ids))
        clicks = rng.random(len(ids)) < 1 / (1 + np.exp(-(scores - 2)))
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
    return feedback_entries


def run_job(client: redis.Redis) -> tuple[float | None, int]:
    settings = MonitoringSettings(environment="local", auc_window_s=3600.0, auc_attribution_s=600.0)
    job = OnlineAuc(client, settings)
    job.ensure_groups()
    reads = 1
    while job.step(block_ms=None, count=READ_COUNT):
        reads += 1  # one XREADGROUP of both streams per step (the backlog pass may add one more)
    job.compute(time.time())
    return job.estimates["v1"].auc, reads


def _auc(scores: list[float], labels: list[bool]) -> float:
    order = np.argsort(np.asarray(scores), kind="mergesort")
    ranks = np.empty(len(order))
    ranks[order] = np.arange(1, len(order) + 1)
    y = np.asarray(labels)
    pos = int(y.sum())
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * (len(y) - pos)))


def run_naive(client: redis.Redis, feedback_entries: int, predictions: int) -> tuple[float | None, int]:
    served: dict[tuple[str, int], float] = {}
    scores: list[float] = []
    labels: list[bool] = []
    last = {PREDICTIONS_STREAM: "0", FEEDBACK_STREAM: "0"}
    seen, auc, reads = 0, None, 0
    # A scrape per 15 s of traffic: that many predictions' worth of feedback entries at this workload's mean size.
    scrape_every = max(1, round(SCRAPE_EVERY * feedback_entries / max(predictions, 1)))
    for stream in (PREDICTIONS_STREAM, FEEDBACK_STREAM):
        while reply := cast(list[Any], client.xread({stream: last[stream]}, count=READ_COUNT)):
            reads += 1
            entries = reply[0][1]
            last[stream] = entries[-1][0]
            for _entry_id, fields in entries:
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
                    if seen % scrape_every == 0:
                        auc = _auc(scores, labels)
    return (_auc(scores, labels) if labels else auc), reads


def peak_rss_kib() -> int:
    """This process's own peak RSS: VmHWM, which starts afresh at exec.

    Not getrusage's ru_maxrss: Linux carries into it, at exec, the high-water mark of the memory the child had
    before exec, i.e. shared with its parent by the fork (or vfork) that started it, so a child reported the
    parent's size (the parent holding the dataset's requests made both children read 291 MiB on 2026-12-05).
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # not Linux: the best there is


def child(impl: str, url: str, predictions: int, feedback_entries: int) -> None:
    client = redis.Redis.from_url(url)
    before = resource.getrusage(resource.RUSAGE_SELF)
    if impl == "job":
        auc, reads = run_job(client)
    else:
        auc, reads = run_naive(client, feedback_entries, predictions)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    out = {"impl": impl, "cpu_s": cpu, "rss_mib": peak_rss_kib() / 1024, "auc": auc, "n": predictions}
    print(json.dumps(out | {"reads": reads, "feedback": feedback_entries}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python monitoring/benchmarks/bench_online_auc.py", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--predictions", type=int, default=10_000, help="requests of traffic to drain")
    parser.add_argument(
        "--data",
        type=Path,
        default=Path("data/small"),
        help="dataset whose requests.parquet and restaurant coordinates give each prediction's answer size",
    )
    parser.add_argument("--child", choices=["job", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    parser.add_argument("--feedback", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.redis_url, args.predictions, args.feedback)
        return 0
    answers = served_answers(args.data)
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp)) as server:
        feedback = write_traffic(redis.Redis.from_url(server.url), args.predictions, answers)
        results = {}
        for impl in ("job", "naive"):
            cmd = [
                sys.executable,
                __file__,
                "--child",
                impl,
                "--redis-url",
                server.url,
                "--feedback",
                str(feedback),
            ]
            out = subprocess.run(
                [*cmd, "--predictions", str(args.predictions)], capture_output=True, text=True, check=True
            )
            results[impl] = json.loads(out.stdout.strip().splitlines()[-1])
    sizes = np.array([len(a) for a in answers])
    print(
        f"answer sizes ({args.data / 'requests.parquet'}, {len(sizes):,} requests): mean {sizes.mean():.1f}, "
        f"p5-p95 {np.percentile(sizes, 5):.0f}-{np.percentile(sizes, 95):.0f}"
    )
    report(results)
    return 0


def report(results: dict[str, dict[str, float]]) -> None:
    job = results["job"]
    per = {k: 1e6 * r["cpu_s"] / r["n"] for k, r in results.items()}
    n, feedback = int(job["n"]), int(job["feedback"])
    print(f"predictions drained: {n:,} ({feedback:,} feedback entries, {feedback / n:.1f} per prediction)")
    for k, r in results.items():
        core = per[k] * RATE / 1e6
        print(
            f"{k:>6}: {per[k]:7.1f} µs CPU/prediction = {100 * core:5.1f} % of a core at 2,000/s, "
            f"peak RSS {r['rss_mib']:.0f} MiB, AUC {r['auc']:.4f}, {int(r['reads']):,} reads of ≤ {READ_COUNT:,}"
        )
    print(
        f"ratio naive/job CPU: {per['naive'] / per['job']:.1f}x; target ≤ 100 µs/prediction: "
        f"{'met' if per['job'] <= 100 else 'NOT met'}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
