"""``forkcast-local drill``: the whole MLOps loop end to end on real processes, with a report of every stage.

serve → feedback (simulator) → online AUC → inject drift → OnlineAucLow fires → Alertmanager → alert receiver →
"GitLab" trigger → the retraining pipeline with CI's calls (drill_ci) → gate → publish to S3 (+ MLflow) → promote
into a scratch GitOps repo → feature cutover to the drifted features → the canary rehearsal of rollouts/ promotes
the new release to 100 % → online AUC of the new version recovers. A client sends requests from requests.parquet
through the gateway the whole time and counts every answer that is not a 200.

Everything runs on 127.0.0.1, on free ports and in its own state directory (never the ``make up`` platform), and
only the time scale is compressed: the AUC window, the rules' ``for:``, Alertmanager's intervals and the Rollout's
pauses and analysis intervals are parameters. Drift is injected where it happens in production: the simulator's
world moves (``--drift S``) while the served features and model stay as they were. Every process started is
stopped by PID on exit, failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from forkcast_local import drill_stack as ds
from forkcast_local.config import PlatformConfig
from forkcast_local.demo import _ensure_gitops
from forkcast_local.drill_ci import Pipeline
from forkcast_local.drill_report import write_report
from forkcast_local.drill_services import ALERT, BIN, DrillError, Services, missing_binaries, wait
from forkcast_local.rollout_drill import Drill, query
from forkcast_local.rollout_spec import ROLLOUTS, load
from forkcast_monitoring import manifest_config

__all__ = ["ALERT", "main", "missing_binaries"]


class Canary(Drill):
    """The rollout rehearsal (rollout_drill.Drill) on the drill's running stack, its client and its gateway."""

    def __init__(self, o: argparse.Namespace, stack: ds.Stack, e2e: EndToEnd, canary_url: str) -> None:
        opts = argparse.Namespace(
            time_scale=o.time_scale,
            arg=[f"min-requests={o.min_requests}", f"min-samples={o.min_samples}"],
            latency_ms=0.0,
        )
        super().__init__(opts, load(o.rollouts), stack)
        # The stack's Prometheus labels every target with the rendered overlay's namespace (local_alerting), as
        # the operator does in the cluster; the analyses ask for that namespace.
        self.namespace = manifest_config.load().namespace
        self.redis, self.stable, self.canary = e2e.redis, e2e.stable, canary_url
        self.prometheus, self.keys, self.client = e2e.prometheus, e2e.keys, e2e.client
        self.gateway_pid = e2e.gateway_pid


class EndToEnd(Services):
    def __init__(self, o: argparse.Namespace) -> None:
        super().__init__(o)
        self.pipelines: list[Pipeline] = []
        self.retrain_done = threading.Event()
        self.retrain_error: BaseException | None = None
        self.report: dict[str, Any] = {"options": {k: str(v) for k, v in vars(o).items()}}

    # -- the retraining pipeline the trigger starts ------------------------------------------------------------
    def pipeline(self, name: str, data: Path, variables: dict[str, str]) -> Pipeline:
        def on_stage(step: str, detail: dict[str, Any]) -> None:
            self.tl.mark(f"{name}: {step}", **detail)

        p = Pipeline(
            data,
            self.work / "runs" / name,
            self.gitops,
            self.client_env(),
            BIN,
            on_stage,
            self.o.recipe,
            variables,
        )
        self.pipelines.append(p)
        return p

    def on_trigger(self, variables: dict[str, str]) -> None:
        self.tl.mark("GitLab trigger received", alert=variables.get("ALERT_NAME"))

        def run() -> None:
            try:
                self.retrain = self.pipeline("retrain", self.drifted, variables).execute()
            except BaseException as exc:  # handed to the main thread, which fails the drill with it
                self.retrain_error = exc
            finally:
                self.retrain_done.set()

        threading.Thread(target=run, daemon=True).start()

    # -- AUC ---------------------------------------------------------------------------------------------------
    def auc(self, version: str, over_s: int = 0) -> float | None:
        sel = f'forkcast_online_auc{{model_version="{version}"}}'
        values = query(self.prometheus, f"avg_over_time({sel}[{over_s}s])" if over_s else sel)
        return values[0] if values else None

    def samples(self, version: str) -> float:
        values = query(self.prometheus, f'forkcast_online_auc_samples{{model_version="{version}"}}')
        return values[0] if values else 0.0

    # -- the drill ---------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        o, tl = self.o, self.tl
        self.drifted = self.work / f"data-drift{o.drift}"
        meta = json.loads((o.data / "dataset.json").read_text())
        subprocess.run(
            [
                str(BIN / "forkcast-data"),
                "generate",
                "--preset",
                meta["preset"],
                "--out",
                str(self.drifted),
                "--drift",
                str(o.drift),
                "--no-progress",
            ],
            check=True,
            capture_output=True,
        )
        tl.mark("datasets", base=str(o.data), drifted=str(self.drifted), preset=meta["preset"])
        self.start_storage()
        self.gitops = _ensure_gitops(PlatformConfig(root=self.work, ports={}, settings={}))
        baseline = self.pipeline("baseline", o.data, {}).bootstrap(o.baseline_epochs)
        self.v1 = baseline["version"]
        self.stable = self.start_inference("inference-stable")
        self.keys = self.work / "api-keys"
        key = "drill-" + os.urandom(8).hex()
        import hashlib

        self.keys.write_text(f"drill:{hashlib.sha256(key.encode()).hexdigest()}\n")
        self.gateway_pid, gateway = ds.start_gateway(
            self.stack, self.redis, self.keys, f"stable*100={self.stable}"
        )
        tl.mark("serving", version=self.v1, gateway=gateway)
        self.client = ds.Client(o.data, key, gateway, 10**9, o.timeout_s, interval_s=o.request_interval_s)
        self.client_thread = threading.Thread(target=self.client.run, daemon=True)
        self.client_thread.start()
        traffic_at = tl.mark("client sending requests.parquet through the gateway")
        self.start_monitoring()

        # Pre-drift level: a full window of feedback on the served version.
        wait(
            lambda: time.time() - traffic_at >= o.window_s and self.auc(self.v1),
            o.window_s + 120,
            "online AUC",
        )
        time.sleep(3)
        pre = self.auc(self.v1, over_s=3)
        assert pre is not None
        tl.mark("online AUC steady (pre-drift)", auc=round(pre, 4), samples=int(self.samples(self.v1)))
        # The report fills in as the figures are measured, so that a failed run shows how far it got.
        r = self.report
        r["versions"] = {"before": self.v1}
        r["auc"] = {"pre_drift": pre, "tolerance": o.tolerance, "min_drop": o.min_drop}
        firing_before = query(self.prometheus, f'ALERTS{{alertname="{ALERT}",alertstate="firing"}}')
        if firing_before:
            raise DrillError(
                f"{ALERT} fires before any drift (AUC {pre:.3f}): the drill cannot measure detection"
            )

        # Drift: the world moves, the served features and model do not.
        self.stack.stop(self.sim.pid)
        self.sim = self.start_simulator(o.drift)
        drift_at = tl.mark("drift injected", simulator_drift=o.drift)
        low = pre - o.min_drop

        def dropped() -> float | None:
            a = self.auc(self.v1)
            return a if a is not None and a <= low else None

        visible = wait(dropped, 180, f"AUC ≤ {low:.3f}", 0.25)
        visible_at = tl.mark("AUC drop visible in the window", auc=round(visible, 4))
        firing = wait(
            lambda: query(self.prometheus, f'ALERTS{{alertname="{ALERT}",alertstate="firing"}}'),
            180,
            f"{ALERT} firing",
            0.25,
        )
        fired_at = tl.mark(f"{ALERT} firing (Prometheus)", alerts=len(firing))
        auc_drifted = self.auc(self.v1, over_s=3)
        wait(lambda: self.gitlab.calls, 120, "the GitLab trigger", 0.25)
        trigger_at = self.gitlab.calls[0].at
        r["auc"] |= {"drifted": auc_drifted, "drop": pre - (auc_drifted or pre)}
        r["alert"] = {
            "visible_at": visible_at,
            "fired_at": fired_at,
            "trigger_at": trigger_at,
            "firing_delay_s": trigger_at - visible_at,
            "drift_to_trigger_s": trigger_at - drift_at,
            "prometheus_firing_delay_s": fired_at - visible_at,
        }

        # The pipeline runs in its thread (stages marked as they end); then the release reaches the users.
        wait(lambda: self.retrain_done.is_set(), o.timeout_s, "the retraining pipeline", 0.5)
        if self.retrain_error is not None:
            raise DrillError(f"retraining pipeline failed: {self.retrain_error}") from self.retrain_error
        v2 = self.retrain["version"]
        r["retrain"] = {k: v for k, v in self.retrain.items() if k != "gate_ci"} | {
            "gate_ci": {k: v for k, v in self.retrain["gate_ci"].items() if k != "checks"}
        }
        proc = subprocess.run(
            [
                str(BIN / "forkcast-features"),
                "load",
                "--data",
                str(self.drifted),
                "--activate",
                "--no-progress",
            ],
            env={**os.environ, **self.client_env()},
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise DrillError(f"feature load failed: {proc.stderr[-2000:]}")
        tl.mark("feature cutover (drifted features live)")
        canary_url = self.start_inference("inference-canary")
        self.scrape_canary(canary_url)
        tl.mark("canary started from the promoted overlay", version=v2)
        canary = Canary(o, self.stack, self, canary_url)
        rollout = canary.run()
        self.gateway_pid = canary.gateway_pid
        for done in rollout["steps"]:  # each step of rollouts/inference-rollout.yaml, when it started
            step = canary.spec.steps[done["step"]]
            what = {"setWeight": f"setWeight {step.weight}", "pause": f"pause {step.pause_s:.0f} s (scaled)"}
            tl.mark(
                f"canary step {done['step'] + 1}: {what.get(step.kind, 'analysis ' + ', '.join(step.templates))}",
                at=done["at"],
            )
        if rollout["outcome"] != "Promoted":
            raise DrillError(f"canary not promoted: {rollout['verdict']}")
        full_at = tl.mark("canary at 100 % (promoted)", steps=len(rollout["steps"]))
        r |= {"rollout": rollout, "retrain_to_100_s": full_at - trigger_at}

        def recovered() -> float | None:
            a = self.auc(v2, over_s=3)
            return (
                a if a is not None and a >= pre - o.tolerance and self.samples(v2) >= o.min_samples else None
            )

        auc_after = wait(recovered, o.window_s + 120, f"online AUC of {v2} ≥ {pre - o.tolerance:.3f}")
        tl.mark("online AUC recovered", version=v2, auc=round(auc_after, 4))
        r["versions"]["after"] = v2
        r["auc"]["recovered"] = auc_after
        return self.report

    def alert_episodes(self, since: float) -> dict[str, int]:
        """Rising edges of the firing alert per model version, from Prometheus' own series."""
        import urllib.parse
        import urllib.request

        params = {
            "query": f'ALERTS{{alertname="{ALERT}",alertstate="firing"}}',
            "start": str(since),
            "end": str(time.time()),
            "step": "1",
        }
        with urllib.request.urlopen(
            f"{self.prometheus}/api/v1/query_range?{urllib.parse.urlencode(params)}"
        ) as r:
            series = json.load(r)["data"]["result"]
        out: dict[str, int] = {}
        for s in series:
            times = [float(t) for t, _ in s["values"]]
            edges = 1 + sum(1 for a, b in itertools.pairwise(times) if b - a > 1.5)
            out[s["metric"].get("model_version", "?")] = edges
        return out

    def close(self) -> None:
        if hasattr(self, "client"):
            self.client.stop_event.set()
            self.client_thread.join(15)
        for p in self.pipelines:
            p.stop()
        super().close()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="forkcast-local drill", description=__doc__.splitlines()[0])
    p.add_argument(
        "--data", type=Path, required=True, help="dataset served first (forkcast-data generate --out)"
    )
    p.add_argument(
        "--work",
        type=Path,
        required=True,
        help="parent of the state dirs: each run makes WORK/<date-time>/ (logs, runs, S3, TSDB)",
    )
    p.add_argument(
        "--report", type=Path, help="write the report here as .json and .md (default: WORK/report)"
    )
    p.add_argument(
        "--drift", type=float, default=1.0, help="the simulator's --drift S after the steady phase"
    )
    p.add_argument(
        "--preset", choices=("tiny", "small", "full"), help="generate --data with this preset first"
    )
    p.add_argument(
        "--baseline-epochs", type=int, default=1, help="epochs of the release served before the drill (setup)"
    )
    p.add_argument(
        "--recipe", default="default", help="training recipe of the pipeline (CI's ${RECIPE:-default})"
    )
    p.add_argument(
        "--mlflow",
        choices=("server", "file"),
        default="server",
        help="a real mlflow server (sqlite + S3 artifacts) or the registry's local file store",
    )
    p.add_argument("--window-s", type=float, default=30.0, help="online-AUC event-time window (prod: 3600)")
    p.add_argument("--for-s", type=int, default=10, help="every alert rule's for: in seconds (prod: 10m)")
    p.add_argument("--min-samples", type=int, default=1000, help="online-AUC job and template min-samples")
    p.add_argument("--min-requests", type=int, default=10, help="AnalysisTemplate arg min-requests")
    p.add_argument("--time-scale", type=float, default=30.0, help="divide the Rollout's pauses and intervals")
    p.add_argument(
        "--rollouts", type=Path, default=ROLLOUTS, help="folder with the Rollout and its templates"
    )
    p.add_argument("--min-drop", type=float, default=0.05, help="AUC drop that counts as visible drift")
    p.add_argument("--tolerance", type=float, default=0.02, help="recovered AUC ≥ pre-drift minus this")
    p.add_argument("--request-interval-s", type=float, default=0.01, help="client pause between requests")
    p.add_argument("--timeout-s", type=float, default=900.0, help="bound on the whole drill")
    return p


def main(argv: list[str] | None = None) -> int:
    o = _parser().parse_args(argv)
    o.data = o.data.resolve()
    # A fresh state directory per run, so that no S3 version, promoted release or feature left by an earlier run
    # takes part in this one.
    o.work = (o.work / time.strftime("%Y%m%d-%H%M%S")).resolve()
    if o.preset:  # idempotent: nothing to do when the dataset is complete
        generate = ["generate", "--preset", o.preset, "--out", str(o.data), "--no-progress"]
        subprocess.run([str(BIN / "forkcast-data"), *generate], check=True)
    if missing := missing_binaries():
        print(f"drill needs {', '.join(missing)} (make system-packages / make setup)", file=sys.stderr)
        return 2

    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    e2e = EndToEnd(o)
    ok = False
    try:
        report = e2e.run()
        ok = True
    except (Exception, KeyboardInterrupt) as exc:  # reported, after every process is stopped
        report = e2e.report | {"error": f"{type(exc).__name__}: {exc}"}
        print(f"drill FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
    finally:
        episodes = e2e.alert_episodes(e2e.tl.t0) if hasattr(e2e, "prometheus") and ok else {}
        e2e.close()
    c = getattr(e2e, "client", None)
    statuses = dict(c.statuses) if c else {}
    report |= {
        "stages": e2e.tl.stages,
        "alert_episodes": episodes,
        "triggers": len(e2e.gitlab.calls) if hasattr(e2e, "gitlab") else 0,
        "client": {
            "sent": c.sent if c else 0,
            "statuses": statuses,
            "versions": dict(c.versions) if c else {},
            "failed": sum(n for s, n in statuses.items() if s != 200),
        },
        "pipelines": {p.run.name: p.result for p in e2e.pipelines},
        "work": str(e2e.work),
    }
    report["checks"] = checks(report) if ok else {}
    report["ok"] = ok and all(report["checks"].values())
    base = o.report or e2e.work / "report"
    write_report(report, base)
    failed = [name for name, passed in report["checks"].items() if not passed]
    print(f"drill {'PASSED' if report['ok'] else 'FAILED'}{': ' + ', '.join(failed) if failed else ''}")
    print(f"report: {base.with_suffix('.json')} and {base.with_suffix('.md')}")
    return 0 if report["ok"] else 1


def checks(r: dict[str, Any]) -> dict[str, bool]:
    """The drill's targets (issues 9 and 11), each passed or not."""
    auc, alert, retrain = r["auc"], r["alert"], r["retrain"]
    return {
        "zero failed client requests": r["client"]["failed"] == 0,
        "one alert episode, for the served version": r["alert_episodes"] == {r["versions"]["before"]: 1},
        "exactly one retrain trigger": r["triggers"] == 1,
        f"AUC drop ≥ {auc['min_drop']}": auc["pre_drift"] - auc["drifted"] >= auc["min_drop"],
        "alert within 120 s of the drop becoming visible": alert["firing_delay_s"] <= 120,
        "gate passed": bool(retrain.get("gate_passed")),
        "overlay changed to the new version": bool(retrain.get("overlay_changed")),
        "canary promoted to 100 %": r["rollout"]["outcome"] == "Promoted",
        "retrain-to-100 % ≤ 300 s": r["retrain_to_100_s"] <= 300,
        f"AUC recovered (≥ pre-drift − {auc['tolerance']})": auc["recovered"]
        >= auc["pre_drift"] - auc["tolerance"],
    }


if __name__ == "__main__":
    raise SystemExit(main())
