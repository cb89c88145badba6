"""``make load``: the load test of the local platform with locust, the real workload through the gateway.

Two headless locust runs against the gateway (loopback, bounded in time):

1. **acceptance**: the original acceptance test, 30 req/s constant arrival for 60 s (N users at
   ``constant_throughput(30/N)``); passes when p95 ≤ 100 ms; the project target p95 ≤ 8 ms is reported beside it.
2. **step**: users 1→2→4→8→16→32 sending back to back, 10 s each: throughput and p50/p95/p99 per step, up to
   saturation (where req/s stops growing and latency does).

Writes ``summary.md`` (the table), ``latency.png`` (latency and throughput over time, from locust's ``--csv``
stats history), the locust CSVs and each request's latency (``*_requests.csv``) to ``--out`` (``docs/load/``).
Exit status 1 when a request failed or the acceptance p95 is above its bound.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from forkcast_local.config import DEFAULT_CONFIG, REPO_ROOT, load_config, read_state

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
ACCEPTANCE_P95_MS = 100.0
TARGET_P95_MS = 8.0


@dataclass(frozen=True)
class Stage:
    users: int
    seconds: float


@dataclass(frozen=True)
class StageResult:
    test: str
    users: int
    seconds: float
    requests: int
    failures: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile (the same definition as the demo's loadgen); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_locust(
    name: str,
    host: str,
    api_key: str,
    requests_file: Path,
    stages: list[Stage],
    user_rate: float,
    out: Path,
) -> Path:
    """One headless locust run of ``stages``; returns the per-request log. Killed if it overruns by 60 s."""
    log = out / f"{name}_requests.csv"
    env = {
        **os.environ,
        "FORKCAST_LOAD_REQUESTS": str(requests_file),
        "FORKCAST_LOAD_API_KEY": api_key,
        "FORKCAST_LOAD_STAGES": ",".join(f"{s.users}:{s.seconds:g}" for s in stages),
        "FORKCAST_LOAD_USER_RATE": f"{user_rate:g}",
        "FORKCAST_LOAD_LOG": str(log),
    }
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", host]
    cmd += ["--csv", str(out / name), "--csv-full-history", "--only-summary", "--loglevel", "WARNING"]
    cmd += ["--stop-timeout", "5", "--exit-code-on-error", "0"]
    budget = sum(s.seconds for s in stages) + 60
    subprocess.run(cmd, env=env, check=True, timeout=budget, stdout=subprocess.DEVNULL)
    return log


def summarise(test: str, log: Path, stages: list[Stage]) -> list[StageResult]:
    """Per stage: requests that *started* in it (by time since the first request), failures, latency quantiles."""
    with log.open() as f:
        rows = [(float(r["start"]), float(r["latency_ms"]), int(r["status"])) for r in csv.DictReader(f)]
    t0 = min((r[0] for r in rows), default=0.0)
    results = []
    begin = 0.0
    for stage in stages:
        inside = [r for r in rows if begin <= r[0] - t0 < begin + stage.seconds]
        ok = [latency for _, latency, status in inside if status == 200]
        results.append(
            StageResult(
                test=test,
                users=stage.users,
                seconds=stage.seconds,
                requests=len(inside),
                failures=len(inside) - len(ok),
                p50_ms=quantile(ok, 0.50),
                p95_ms=quantile(ok, 0.95),
                p99_ms=quantile(ok, 0.99),
                max_ms=max(ok, default=float("nan")),
            )
        )
        begin += stage.seconds
    return results


def status_counts(log: Path) -> dict[int, int]:
    """How many requests ended with each status (0: no response, -1: a 200 that locust counted as failed)."""
    with log.open() as f:
        statuses = [int(r["status"]) for r in csv.DictReader(f)]
    return {code: statuses.count(code) for code in sorted(set(statuses))}


def markdown(results: list[StageResult], header: str) -> str:
    lines = [
        header,
        "",
        "| test | users | s | requests | failures | req/s | p50 ms | p95 ms | p99 ms | max ms |",
    ]
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    lines.extend(
        f"| {r.test} | {r.users} | {r.seconds:g} | {r.requests} | {r.failures} | {r.rps:.1f} | "
        f"{r.p50_ms:.1f} | {r.p95_ms:.1f} | {r.p99_ms:.1f} | {r.max_ms:.1f} |"
        for r in results
    )
    return "\n".join(lines) + "\n"


def plot(histories: dict[str, Path], png: Path) -> None:
    """p50/p95 latency and req/s over time of each run, from locust's ``<name>_stats_history.csv``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(histories), 1, figsize=(9, 3.2 * len(histories)), squeeze=False)
    for ax, (name, path) in zip(axes[:, 0], histories.items(), strict=True):
        with path.open() as f:
            rows = [r for r in csv.DictReader(f) if r["Name"] == "Aggregated" and r["95%"] not in ("N/A", "")]
        if not rows:
            continue
        t0 = int(rows[0]["Timestamp"])
        t = [int(r["Timestamp"]) - t0 for r in rows]
        ax.plot(t, [float(r["50%"]) for r in rows], label="p50 ms")
        ax.plot(t, [float(r["95%"]) for r in rows], label="p95 ms")
        ax.plot(t, [float(r["99%"]) for r in rows], label="p99 ms", alpha=0.6)
        ax.set_ylabel("latency (ms)")
        ax.set_title(f"{name} (locust, 10 s rolling percentiles)")
        rps = ax.twinx()
        rps.plot(t, [float(r["Requests/s"]) for r in rows], color="grey", linestyle="--", label="req/s")
        rps.plot(t, [float(r["User Count"]) for r in rows], color="black", linestyle=":", label="users")
        rps.set_ylabel("req/s, users")
        handles = ax.get_legend_handles_labels()[0] + rps.get_legend_handles_labels()[0]
        ax.legend(handles=handles, loc="upper left", fontsize=8)
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m forkcast_local.load", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--data", type=Path, default=Path("data/small"), help="dataset dir (default %(default)s)"
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs/load", help="where the results go")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="platform.toml")
    parser.add_argument("--root", type=Path, help="platform state dir (default .local/)")
    parser.add_argument("--rate", type=float, default=30.0, help="acceptance arrival rate, req/s")
    parser.add_argument("--duration", type=float, default=60.0, help="acceptance duration, s")
    parser.add_argument("--users", type=int, default=10, help="acceptance locust users sharing the rate")
    parser.add_argument("--steps", default="1,2,4,8,16,32", help="step test user counts ('' to skip)")
    parser.add_argument("--step-seconds", type=float, default=10.0, help="seconds per step")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config = load_config(args.config, args.root)
    gateway = read_state(config)["components"].get("gateway", {}).get("port") or config.ports["gateway"]
    host = f"http://127.0.0.1:{gateway}"
    api_key = config.api_key_file.read_text().strip()
    requests_file = args.data / "requests.parquet"
    args.out.mkdir(parents=True, exist_ok=True)

    acceptance = [Stage(args.users, args.duration)]
    print(f"acceptance: {args.rate:g} req/s for {args.duration:g} s through {host}", flush=True)
    log = run_locust("acceptance", host, api_key, requests_file, acceptance, args.rate / args.users, args.out)
    results = summarise("acceptance", log, acceptance)
    statuses = {"acceptance": status_counts(log)}
    histories = {"acceptance": args.out / "acceptance_stats_history.csv"}
    steps = [Stage(int(u), args.step_seconds) for u in args.steps.split(",") if u]
    if steps:
        print(f"step: users {args.steps}, {args.step_seconds:g} s each, back to back", flush=True)
        log = run_locust("step", host, api_key, requests_file, steps, 0.0, args.out)
        results += summarise("step", log, steps)
        statuses["step"] = status_counts(log)
        histories["step"] = args.out / "step_stats_history.csv"

    accepted = results[0]
    verdict = [
        f"acceptance p95 {accepted.p95_ms:.1f} ms ≤ {ACCEPTANCE_P95_MS:g} ms: "
        + ("PASS" if accepted.p95_ms <= ACCEPTANCE_P95_MS else "FAIL"),
        f"project target p95 ≤ {TARGET_P95_MS:g} ms: "
        + ("met" if accepted.p95_ms <= TARGET_P95_MS else "NOT met"),
    ]
    if steps:
        best = max(results[1:], key=lambda r: r.rps)
        verdict.append(f"saturation: {best.rps:.1f} req/s at {best.users} users (p95 {best.p95_ms:.1f} ms)")
    verdict += [f"{test} statuses: {counts}" for test, counts in statuses.items()]
    header = f"Load test {time.strftime('%Y-%m-%d')}, gateway {host}, workload {requests_file}"
    text = markdown(results, header) + "\n" + "\n".join(f"* {v}" for v in verdict) + "\n"
    (args.out / "summary.md").write_text(text)
    plot(histories, args.out / "latency.png")
    print(text + f"\nwritten: {args.out / 'summary.md'}, {args.out / 'latency.png'}")
    failures = sum(r.failures for r in results)
    return 0 if failures == 0 and accepted.p95_ms <= ACCEPTANCE_P95_MS else 1


if __name__ == "__main__":
    raise SystemExit(main())
