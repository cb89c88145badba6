"""Local rollout rehearsal: the inference Rollout's own canary steps, without a cluster (issue 10 item 8).

A real Redis with the dataset's features, a stable and a canary ``forkcast-inference``, a ``forkcast-gateway`` per
step carrying the step's weights (a new gateway is started and made ready before the client moves to it, so no
request meets a restart), the online-AUC job and the feedback simulator, and a real Prometheus scraping them every
second with the labels the AnalysisTemplates select on (``rollouts_pod_template_hash`` = ``stable``/``canary``).
Steps, queries and conditions come from ``rollouts/``; pauses and analysis intervals are divided by
``--time-scale``. ``--latency-ms`` injects the fault: the canary reaches Redis through a proxy that delays every
command, so its own request histogram (what the p95 template reads) is slow while clients still get a 200.
Exit 0 when the outcome is the expected one (``--expect``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from forkcast_local import drill_stack as ds
from forkcast_local.rollout_spec import ROLLOUTS, Canary, Metric, evaluate, load, render

NAMESPACE = "drill"
HASHES = {"canary-hash": "canary", "stable-hash": "stable"}
T0 = time.time()


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} +{time.time() - T0:6.1f}s] {text}", flush=True)


def query(prometheus: str, promql: str, at: float | None = None) -> list[float]:
    params = {"query": promql} | ({"time": str(at)} if at else {})
    url = f"{prometheus}/api/v1/query?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.load(resp)
    if body["status"] != "success":
        raise RuntimeError(f"Prometheus refused the query: {body}")
    data = body["data"]
    if data["resultType"] == "scalar":
        return [float(data["result"][1])]
    return [float(s["value"][1]) for s in data["result"]]


# The sped-up Prometheus scrapes every second and rate() needs two samples of a new pod's series: a measurement
# interval scaled below 2 s spent the whole inconclusive budget (inconclusiveLimit + 1 measurements) before a fresh
# canary could have a value, and the drill at ×120 aborted a healthy canary as Inconclusive.
MIN_INTERVAL_S = 2.0


class Analysis:
    """One metric's AnalysisRun: measures every interval, Failed / Inconclusive / Successful by its limits."""

    def __init__(self, metric: Metric, args: dict[str, str], prometheus: str, scale: float) -> None:
        self.m, self.prometheus = metric, prometheus
        self.query = render(metric.query, {**metric.defaults, **args})
        self.interval_s = max(metric.interval_s / scale, MIN_INTERVAL_S)
        self.failed = self.inconclusive = self.succeeded = 0
        self.first_failure_at: float | None = None

    def measure(self) -> str:
        result = query(self.prometheus, self.query)
        if evaluate(self.m.failure, result):
            self.failed += 1
            self.first_failure_at = self.first_failure_at or time.time()
            outcome = "Failed"
        elif evaluate(self.m.success, result):
            self.succeeded += 1
            outcome = "Successful"
        else:
            self.inconclusive += 1
            outcome = "Inconclusive"
        say(f"  {self.m.template}/{self.m.name}: {outcome} result={[round(v, 4) for v in result]}")
        return outcome

    @property
    def phase(self) -> str:
        if self.failed > self.m.failure_limit:
            return "Failed"
        if self.inconclusive > self.m.inconclusive_limit:
            return "Inconclusive"
        done = self.m.count is not None and self.failed + self.inconclusive + self.succeeded >= self.m.count
        return "Successful" if done else "Running"


class Drill:
    def __init__(self, opts: argparse.Namespace, canary: Canary, stack: ds.Stack | None = None) -> None:
        self.o, self.spec = opts, canary
        # The end-to-end drill (drill.py) hands in its own running stack; alone, the rehearsal makes one.
        self.stack = stack or ds.Stack(Path(tempfile.mkdtemp(prefix="rollout-drill-")))
        self.work = self.stack.work
        self.args = dict(a.split("=", 1) for a in opts.arg)
        self.verdict: str | None = None  # set by a background analysis that ends the rollout
        self.lock = threading.Lock()
        self.gateway_pid = 0
        self.namespace = NAMESPACE
        self.failed_at = 0.0

    # -- setup -------------------------------------------------------------------------------------------------
    def up(self) -> None:
        o, s = self.o, self.stack
        self.redis = ds.start_redis(s, o.data)
        canary_redis = self.redis
        if o.latency_ms > 0:
            self.proxy = ds.SlowProxy(int(self.redis.rsplit(":", 1)[1].split("/")[0]), o.latency_ms / 1000)
            canary_redis = f"redis://127.0.0.1:{self.proxy.port}/0"
        _, self.stable = ds.start_inference(s, "inference-stable", self.redis, o.stable_model)
        _, self.canary = ds.start_inference(s, "inference-canary", canary_redis, o.canary_model)
        auc_port = ds.free_port()
        auc = [str(ds.BIN / "forkcast-online-auc"), "--redis-url", self.redis, "--host", "127.0.0.1"]
        auc += ["--port", str(auc_port), "--min-samples", self.args.get("min-samples", "2000")]
        s.start(
            "online-auc", auc, {"FORKCAST_AUC_COMPUTE_EVERY_S": "1"}, f"http://127.0.0.1:{auc_port}/metrics"
        )
        sim = [str(ds.BIN / "forkcast-feedback-sim"), "--redis-url", self.redis, "--data", str(o.data)]
        self._start_sim(sim)
        self.prometheus = self._prometheus(auc_port)
        key = "drill-" + os.urandom(8).hex()
        self.keys = self.work / "keys"
        self.keys.write_text(f"drill:{hashlib.sha256(key.encode()).hexdigest()}\n")
        _, gateway = self.set_weight(0, first=True)
        self.client = ds.Client(o.data, key, gateway, o.max_requests, o.max_seconds)
        self.client_thread = threading.Thread(target=self.client.run, daemon=True)
        self.client_thread.start()

    def _start_sim(self, argv: list[str]) -> None:
        import subprocess

        with (self.work / "feedback-sim.log").open("ab") as log:
            self.stack.procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT))

    def _prometheus(self, auc_port: int) -> str:
        port = ds.free_port()

        def job(name: str, url: str, role: str | None) -> dict[str, Any]:
            labels = {"namespace": NAMESPACE} | ({"rollouts_pod_template_hash": role} if role else {})
            return {
                "job_name": name,
                "static_configs": [{"targets": [url.removeprefix("http://")], "labels": labels}],
            }

        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                job("inference-stable", self.stable, "stable"),
                job("inference-canary", self.canary, "canary"),
                job("online-auc", f"http://127.0.0.1:{auc_port}", None),
            ],
        }
        path = self.work / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        argv = ["/usr/bin/prometheus", f"--config.file={path}", f"--storage.tsdb.path={self.work / 'tsdb'}"]
        argv.append(f"--web.listen-address=127.0.0.1:{port}")
        url = f"http://127.0.0.1:{port}"
        self.stack.start("prometheus", argv, {}, f"{url}/-/ready")
        return url

    # -- traffic -----------------------------------------------------------------------------------------------
    def set_weight(self, weight: int, first: bool = False) -> tuple[float, str]:
        """A gateway with the new split, ready, then the client moved to it, then the old one stopped."""
        with self.lock:
            spec = f"stable*{100 - weight}={self.stable};canary*{weight}={self.canary}"
            pid, url = ds.start_gateway(self.stack, self.redis, self.keys, spec)
            if not first:
                self.client.gateway = url
                time.sleep(0.2)  # the client finishes the request it has in flight on the old gateway
                self.stack.stop(self.gateway_pid)
            self.gateway_pid = pid
            at = time.time()
            say(f"setWeight {weight}: canary {weight} %, stable {100 - weight} %")
            return at, url

    # -- the rollout ---------------------------------------------------------------------------------------
    def analyses(self, names: tuple[str, ...]) -> list[Analysis]:
        args = {"namespace": self.namespace, **HASHES, **self.args}
        return [
            Analysis(m, args, self.prometheus, self.o.time_scale) for n in names for m in self.spec.metrics[n]
        ]

    def background(self, stop: threading.Event) -> None:
        runs = self.analyses(self.spec.background)
        due = [time.monotonic() + r.interval_s for r in runs]
        while not stop.is_set() and self.verdict is None:
            for i, run in enumerate(runs):
                if time.monotonic() >= due[i]:
                    due[i] += run.interval_s
                    run.measure()
                    if run.phase in ("Failed", "Inconclusive"):
                        self.verdict = f"{run.phase}: background {run.m.template}/{run.m.name}"
                        self.failed_at = run.first_failure_at or time.time()
            stop.wait(0.2)

    def step_analysis(self, names: tuple[str, ...]) -> str:
        runs = self.analyses(names)
        while self.verdict is None:
            for run in runs:
                if run.phase == "Running":
                    run.measure()
            phases = {r.phase for r in runs}
            if "Failed" in phases or "Inconclusive" in phases:
                return "Failed" if "Failed" in phases else "Inconclusive"
            if phases == {"Successful"}:
                return "Successful"
            time.sleep(min(r.interval_s for r in runs))
        return "Aborted"

    def run(self) -> dict[str, Any]:
        report: dict[str, Any] = {"steps": [], "work": str(self.work)}
        stop = threading.Event()
        bg = threading.Thread(target=self.background, args=(stop,), daemon=True)
        outcome = "Promoted"
        for index, step in enumerate(self.spec.steps):
            if index == self.spec.background_start and self.spec.background:
                bg.start()
                say(f"background analysis started: {', '.join(self.spec.background)}")
            if self.verdict:
                break
            started = time.time()
            if step.kind == "setWeight":
                self.set_weight(step.weight)
            elif step.kind == "pause":
                say(f"pause {step.pause_s:.0f} s (scaled: {step.pause_s / self.o.time_scale:.1f} s)")
                end = time.monotonic() + step.pause_s / self.o.time_scale
                while self.verdict is None and time.monotonic() < end:
                    time.sleep(0.1)
            else:
                say(f"analysis {', '.join(step.templates)}")
                phase = self.step_analysis(step.templates)
                if phase in ("Failed", "Inconclusive"):
                    self.verdict, self.failed_at = (
                        f"{phase}: step analysis {', '.join(step.templates)}",
                        time.time(),
                    )
            report["steps"].append({"step": index, "kind": step.kind, "at": started, "end": time.time()})
        stop.set()
        if self.verdict:
            outcome = "Aborted"
            say(f"ABORT ({self.verdict}): all traffic back to stable")
            rolled_back, _ = self.set_weight(0)
            report["rolled_back_at"] = rolled_back
            first_bad = self.first_bad_sample()
            report["first_bad_sample_at"] = first_bad
            report["time_to_rollback_s"] = rolled_back - first_bad if first_bad else None
            time.sleep(1.0)  # some requests on the restored stable-only gateway
        report["verdict"] = self.verdict
        report["outcome"] = outcome
        return report

    def first_bad_sample(self) -> float | None:
        """Time of the first Prometheus sample with a canary request slower than the p95 threshold (50 ms)."""
        sel = 'rollouts_pod_template_hash="canary",status="2xx"'
        promql = (
            f"sum(forkcast_inference_request_seconds_count{{{sel}}}) - "
            f'sum(forkcast_inference_request_seconds_bucket{{{sel},le="0.05"}})'
        )
        params = {"query": promql, "start": str(T0), "end": str(time.time()), "step": "1"}
        url = f"{self.prometheus}/api/v1/query_range?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            series = json.load(resp)["data"]["result"]
        points = [
            float(t) for s in series for t, v in s["values"] if float(v) > 0 and not math.isnan(float(v))
        ]
        return min(points) if points else None

    def down(self) -> None:
        self.client.stop_event.set()
        self.client_thread.join(15)
        self.stack.close()
        if hasattr(self, "proxy"):
            self.proxy.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m forkcast_local.rollout_drill", description=__doc__.splitlines()[0]
    )
    p.add_argument(
        "--data", type=Path, required=True, help="dataset (SPEC §2 files) loaded into Redis and replayed"
    )
    p.add_argument(
        "--stable-model", type=Path, required=True, help="model dir (forkcast-retrain export) of stable"
    )
    p.add_argument("--canary-model", type=Path, required=True, help="model dir of the canary")
    p.add_argument(
        "--latency-ms", type=float, default=0.0, help="delay on each canary Redis command (the fault)"
    )
    p.add_argument(
        "--time-scale", type=float, default=30.0, help="divide pauses and analysis intervals by this"
    )
    p.add_argument(
        "--arg", action="append", default=[], help="AnalysisTemplate arg NAME=VALUE (tiny data: min-requests)"
    )
    p.add_argument(
        "--rollouts", type=Path, default=ROLLOUTS, help="folder with the Rollout and its templates"
    )
    p.add_argument("--max-requests", type=int, default=50_000, help="client bound on requests")
    p.add_argument("--max-seconds", type=float, default=300.0, help="client bound on time")
    p.add_argument("--expect", choices=("Promoted", "Aborted"), help="exit 1 unless this is the outcome")
    p.add_argument("--report", type=Path, help="write the JSON report here")
    o = p.parse_args(argv)
    drill = Drill(o, load(o.rollouts))
    try:
        drill.up()
        report = drill.run()
    finally:
        if hasattr(drill, "client"):
            drill.down()
        else:
            drill.stack.close()
    c = drill.client
    report |= {"client": {"sent": c.sent, "failed": c.failed, "statuses": c.statuses, "versions": c.versions}}
    say(f"outcome {report['outcome']}; client requests {c.sent}, failed {c.failed}; statuses {c.statuses}")
    if report.get("time_to_rollback_s") is not None:
        say(f"time from first bad sample to rollback: {report['time_to_rollback_s']:.1f} s")
    if o.report:
        o.report.write_text(json.dumps(report, indent=2))
    ok = c.failed == 0 and (o.expect is None or report["outcome"] == o.expect)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
