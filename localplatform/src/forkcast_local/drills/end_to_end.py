"""The whole MLOps loop on the local platform: serve, drift, alert, retrain on the served log, canary, recover.

The platform is ``forkcast-local up`` of the rendered ``local`` overlay, in the drill's own state directory, with the
time compressed by parameters of the run, not by a second description of the system: Prometheus scrapes and
evaluates every second with every rule's ``for:`` set to ``--for-s`` and Alertmanager's intervals in seconds
(``config.Speed``), and the online-AUC job's window, minimum samples and compute period and the lake compaction's
batch length are environment overrides of their rendered plans (``PlatformConfig.env_overrides``). The alert
receiver's rendered ``FORKCAST_GITLAB_URL`` (``http://gitlab:8929``) is mapped to the drill's "GitLab"
(drill_ci.LocalGitLab) like any Service name.

serve (8 API keys admitted in the gateway's key file: the online-AUC job leaves out a key holding more than a
quarter of a window) → clicks on the events Redis (clicks.Clicks) → online AUC, and the ``lake-compact`` workload
moving every prediction and click into the lake's served-log tables → drift (the simulated world moves, the served
features and model do not) → OnlineAucLow fires → Alertmanager → alert receiver → "GitLab" trigger → the training
table of the drifted traffic the platform served (``forkcast-lake training-table``: each served pair, its click,
the features it was served with) → the retraining pipeline with CI's calls on it (drill_ci.Pipeline) → gate →
publish → promote into the scratch GitOps clone → the canary rehearsal of the rendered Rollout
(``rehearsal.runner.rehearse``: stable and canary pods of the two release commits on this platform's Redis, their
AnalysisTemplates against the rehearsal's Prometheus configured from the render) → Healthy → ``up`` rolls the platform's
inference pod to the release commit → the online AUC of the new version recovers, on the features that were live all
along (no feature cutover: the model learnt the drifted world from what was served). Then the lake check (drill_lake):
after a pause that empties the online-AUC job's window, a burst of traffic shorter than the window; the AUC the job
exports for the new version must equal ``forkcast-lake online-auc`` over the same window and version to 1e-9, with the
same pair counts. The report also scores, on the held-out pairs of the served log (the same traffic for all), the served
model, the model retrained on the log and a model trained on a generated drifted dataset (``forkcast-data generate
--drift``, the drill's earlier retraining data). A report of every stage (JSON and Markdown); every process started is
stopped by PID on exit, failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

from forkcast_contract.streams import FEEDBACK_STREAM, PREDICTIONS_STREAM
from forkcast_devservers.process import Proc, spawn, wait_exit
from forkcast_devservers.process import stop as stop_process
from forkcast_devservers.ready import http_ok, wait_until
from forkcast_local.clicks import Clicks
from forkcast_local.config import DEFAULT_CONFIG, PlatformConfig, Speed, load_config
from forkcast_local.demo import _ensure_gitops
from forkcast_local.drill_ci import LocalGitLab, Pipeline
from forkcast_local.drill_lake import Lake, job_figures
from forkcast_local.drill_report import TARGETS, write_report
from forkcast_local.rehearsal.podsets import Release
from forkcast_local.rehearsal.releases import dataset, train
from forkcast_local.rehearsal.runner import Outcome, Stack, Update, rehearse
from forkcast_local.rehearsal.spec import RolloutSpec, load
from forkcast_local.rehearsal.traffic import Clients, Traffic
from forkcast_local.supervisor import Platform, down, prepare, up
from forkcast_local.timeline import DrillError, Timeline, wait
from forkcast_monitoring.settings import MonitoringSettings

NAME = "end-to-end"
ALERT = "OnlineAucLow"
# The host and port of the local overlay's FORKCAST_GITLAB_URL (manifests/overlays/local/kustomization.yaml).
GITLAB_HOST, GITLAB_PORT = "gitlab", 8929
# As many keys as the rehearsal's traffic: each holds 1/8 of a window, under FORKCAST_AUC_MAX_KEY_SHARE (0.25).
CLIENT_KEYS = 8
# The click simulator's consumer group on the prediction stream (forkcast_monitoring.simulator.Simulator.group).
SIMULATOR_GROUP = "feedback-sim"
# The lake check's agreement bound: the same pairs give the same AUC up to the rounding of one division.
AUC_MATCH = 1e-9
# The lake check reads the job's estimate every this long until this long before its window's horizon: the last
# read that ended before the horizon counts, so a starved job has until then to hold every pair of the burst.
LAKE_READ_EVERY_S = 0.5
LAKE_READ_MARGIN_S = 1.5


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--work", type=Path, required=True, help="parent of the run: each run makes WORK/<date-time>/"
    )
    p.add_argument("--data", type=Path, help="dataset served first (default: the tiny preset in --cache)")
    p.add_argument("--preset", choices=("tiny", "small"), help="generate --data with this preset first")
    p.add_argument(
        "--cache", type=Path, help="folder of the tiny dataset and trained baseline (default: WORK)"
    )
    p.add_argument(
        "--report", type=Path, help="write the report here as .json and .md (default: WORK/report)"
    )
    p.add_argument(
        "--drift", type=float, default=1.0, help="the simulated world's drift after the steady phase"
    )
    p.add_argument(
        "--baseline-epochs", type=int, default=1, help="epochs of the release served first (setup)"
    )
    p.add_argument(
        "--recipe", default="default", help="training recipe of the pipeline (CI's ${RECIPE:-default})"
    )
    p.add_argument("--window-s", type=float, default=30.0, help="online-AUC event-time window (prod: 3600)")
    p.add_argument("--for-s", type=int, default=10, help="every alert rule's for: in seconds (prod: 10m)")
    p.add_argument(
        "--min-samples", type=int, default=1000, help="the online-AUC job's minimum pairs per window"
    )
    p.add_argument("--time-scale", type=float, default=30.0, help="divide the Rollout's durations by this")
    p.add_argument("--rate", type=float, default=40.0, help="client requests per second through the gateway")
    p.add_argument("--min-drop", type=float, default=0.05, help="AUC drop that counts as visible drift")
    p.add_argument(
        "--min-gain",
        type=float,
        default=0.05,
        help="the new version's online AUC must beat the served version's on the drifted traffic by this",
    )
    p.add_argument(
        "--training-s",
        type=float,
        default=20.0,
        help="seconds of drifted traffic the training table spans (the retrain waits for them after the drift)",
    )
    p.add_argument("--timeout-s", type=float, default=900.0, help="bound on each long wait of the drill")
    p.add_argument(
        "--retrain-target-s",
        type=float,
        default=TARGETS["retrain_to_100_s"],
        help="the drill fails when the GitLab trigger → canary at 100 %% takes longer (default: the product "
        "target, %(default)g s)",
    )
    p.add_argument(
        "--burst-s",
        type=float,
        help="the lake check's burst of traffic (default: a third of --window-s, at most 5 s); shorter than "
        "the window, so the job's window holds the whole burst when it is read",
    )


def platform_config(o: argparse.Namespace, work: Path, gitlab_port: int) -> PlatformConfig:
    """The platform of the run: the rendered overlay with the drill's time compression, on free ports."""
    overrides = {
        "online-auc": {
            "FORKCAST_AUC_WINDOW_S": f"{o.window_s:g}",
            "FORKCAST_AUC_MIN_SAMPLES": str(o.min_samples),
            "FORKCAST_AUC_COMPUTE_EVERY_S": "1",
            "FORKCAST_AUC_ATTRIBUTION_S": "60",
        },
        # A batch of the served log closes after 1 s, not 60: the retrain and the lake check wait for its commit.
        "lake-compact": {"FORKCAST_COMPACT_BATCH_SECONDS": "1"},
    }
    config = load_config(
        DEFAULT_CONFIG,
        work / "platform",
        speed=Speed(scrape_s=1.0, rules_for_s=o.for_s, fast_alerts=True),
        extra_hosts={GITLAB_HOST: {GITLAB_PORT: gitlab_port}},
        env_overrides=overrides,
    )
    return dataclasses.replace(config, ports={})  # never the ports of a `make up` platform


def release_of(config: PlatformConfig) -> tuple[Release, Stack, RolloutSpec]:
    """The inference release the GitOps clone's HEAD renders, the gateway/online-AUC plans, the Rollout spec."""
    platform = prepare(config)
    docs: list[dict[str, Any]] = list(platform.render.docs)
    spec = load(docs)
    plan = platform.plan("inference")
    stack = Stack(platform.plan("gateway"), platform.plan("online-auc"), docs, config)
    return Release(plan.env.get("FORKCAST_MODEL_VERSION", ""), spec.pod_template, plan), stack, spec


class Prom:
    """Instant and range queries against the platform's Prometheus."""

    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, promql: str) -> list[float]:
        with urllib.request.urlopen(
            f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        ) as r:
            return [float(s["value"][1]) for s in json.load(r)["data"]["result"]]

    def auc(self, version: str, over_s: int = 0) -> float | None:
        sel = f'forkcast_online_auc{{model_version="{version}"}}'
        values = self.query(f"avg_over_time({sel}[{over_s}s])" if over_s else sel)
        return values[0] if values else None

    def samples(self, version: str) -> float:
        values = self.query(f'forkcast_online_auc_samples{{model_version="{version}"}}')
        return values[0] if values else 0.0

    def firing(self) -> list[float]:
        return self.query(f'ALERTS{{alertname="{ALERT}",alertstate="firing"}}')

    def episodes(self, since: float) -> dict[str, int]:
        """Rising edges of the firing alert per model version, from Prometheus' own ALERTS series."""
        params = {
            "query": f'ALERTS{{alertname="{ALERT}",alertstate="firing"}}',
            "start": str(since),
            "end": str(time.time()),
            "step": "1",
        }
        with urllib.request.urlopen(f"{self.url}/api/v1/query_range?{urllib.parse.urlencode(params)}") as r:
            series = json.load(r)["data"]["result"]
        out: dict[str, int] = {}
        for s in series:
            times = [float(t) for t, _ in s["values"]]
            edges = 1 + sum(1 for a, b in itertools.pairwise(times) if b - a > 1.5)
            out[s["metric"].get("model_version", "?")] = edges
        return out


def job_settings(env: dict[str, str]) -> dict[str, str]:
    """The online-AUC job's settings the lake's recomputation must share: its rendered env, else its defaults."""
    defaults = {name: f.default for name, f in MonitoringSettings.model_fields.items()}
    fields = ("auc_max_key_share", "auc_attribution_s", "auc_min_samples", "auc_min_per_class",
              "auc_compute_every_s", "auc_group")  # fmt: skip
    return {f.removeprefix("auc_"): env.get(f"FORKCAST_{f.upper()}", str(defaults[f])) for f in fields}


class EndToEnd:
    """One run of the loop on the platform; ``close`` stops exactly what it started."""

    def __init__(self, o: argparse.Namespace, work: Path) -> None:
        self.o, self.work = o, work
        self.tl = Timeline()
        self.report: dict[str, Any] = {
            "options": {k: str(v) for k, v in vars(o).items()},
            "retrain_target_s": o.retrain_target_s,
        }
        self.pipelines: list[Pipeline] = []
        self.retrain_done = threading.Event()
        self.retrain_error: BaseException | None = None
        self.retrain: dict[str, Any] = {}
        self.gitlab = LocalGitLab(self.on_trigger)
        self.config = platform_config(o, work, self.gitlab.port)
        self.keys = {f"drill-{i}": "fk-" + secrets.token_urlsafe(24) for i in range(CLIENT_KEYS)}
        self.phases: list[dict[str, Any]] = []  # the platform clients' counts, one entry per phase
        self.clients: Clients | None = None
        self.clicks: Clicks | None = None
        self.canary: Outcome | None = None
        self.lake: Lake | None = None
        self.drift_at = 0.0
        self.comparison: Proc | None = None  # the training of the generated-drift model, while it runs
        self.started_platform = False

    # -- the platform ------------------------------------------------------------------------------------------
    def _up(self) -> Platform:
        self.started_platform = True
        return up(self.config, log=lambda line: None)

    def _cli(self, *argv: str) -> None:
        proc = subprocess.run(
            [str(self.config.bin_dir / argv[0]), *argv[1:]],
            capture_output=True,
            text=True,
            env={**os.environ, **self.platform.client_env()},
        )
        if proc.returncode != 0:
            raise DrillError(f"{' '.join(argv[:2])} failed: {proc.stderr[-2000:]}")

    def _ready(self, *names: str) -> None:
        for name in names:
            wait_until(partial(http_ok, f"{self.platform.url(name)}/readyz"), timeout_s=120, what=name)

    def _start_clients(self) -> None:
        traffic = Traffic(rate_per_s=self.o.rate, workers=2, keys=CLIENT_KEYS)
        gateway = self.platform.component("gateway").port
        self.clients = Clients(gateway, list(self.keys.values()), self.data, traffic).start()

    def _stop_clients(self, phase: str) -> None:
        if self.clients is not None:
            stats = self.clients.stop()
            self.phases.append(
                {
                    "phase": phase,
                    "sent": stats.sent,
                    "statuses": dict(stats.statuses),
                    "versions": dict(stats.versions),
                    "failed": stats.failed,
                }
            )
            self.clients = None

    def pipeline(self, name: str, data: Path, trigger: dict[str, str]) -> Pipeline:
        p = Pipeline(
            data,
            self.work / "runs" / name,
            self.config.gitops,
            self.platform.client_env(),
            self.config.bin_dir,
            lambda step, detail: self.tl.mark(f"{name}: {step}", **detail),
            self.config.overlay,
            self.o.recipe,
            trigger,
        )
        self.pipelines.append(p)
        return p

    def wait_served_log(self, lake: Lake) -> dict[str, str]:
        """Wait until every prediction written so far has its clicks and the lake holds both; the last ids."""
        time.sleep(1.0)  # a prediction stamped just before now reaches the stream milliseconds later
        lake.wait_clicked(SIMULATOR_GROUP, lake.last_id(PREDICTIONS_STREAM), 60)
        return lake.wait_committed((PREDICTIONS_STREAM, FEEDBACK_STREAM), 120)

    def training_table(self) -> Path:
        """The training table of the drifted traffic served before the trigger (``forkcast-lake training-table``)."""
        assert self.lake is not None
        # From 1 s after the drift: the simulator's batch in flight at the drift (≤ 200 ms) was clicked in the
        # world before it.
        since = self.drift_at + 1.0
        time.sleep(max(0.0, since + self.o.training_s - time.time()))
        until = time.time()
        committed = self.wait_served_log(self.lake)
        out = self.work / "served-log" / "training-table"
        job = job_settings(self._auc_env())
        table = self.lake.training_table(since, until, self.data, out, float(job["attribution_s"]))
        self.report["training_table"] = table | {"committed": committed}
        # The served version's online AUC on exactly this traffic, recomputed from the lake with the job's rule.
        served, _ = self.lake.online_auc(self.v1, since, until, job)
        self.report["auc"]["served_on_drifted"] = served.auc
        self.tl.mark(
            "training table from the served log",
            rows=table["rows"],
            since_drift_s=round(until - self.drift_at, 1),
        )
        return out

    def _auc_env(self) -> dict[str, str]:
        return self.platform.plan("online-auc").env

    def on_trigger(self, trigger: dict[str, str]) -> None:
        """What an accepted GitLab trigger starts: the training table of the served log, then the retraining
        pipeline on it, in a thread."""
        self.tl.mark("GitLab trigger received", alert=trigger["alert_name"])

        def run() -> None:
            try:
                self.retrain = self.pipeline("retrain", self.training_table(), trigger).execute()
            except BaseException as exc:  # handed to the main thread, which fails the drill with it
                self.retrain_error = exc
            finally:
                self.retrain_done.set()

        threading.Thread(target=run, daemon=True).start()

    # -- the drill ---------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        o, tl, r = self.o, self.tl, self.report
        cache = o.cache or self.work
        bin_dir = self.config.bin_dir
        if o.data is None:
            self.data = dataset(cache, bin_dir)
        else:
            self.data = o.data.resolve()
            if o.preset:  # idempotent: nothing to do when the dataset is complete
                subprocess.run(
                    [
                        str(bin_dir / "forkcast-data"),
                        "generate",
                        "--preset",
                        o.preset,
                        "--out",
                        str(self.data),
                        "--no-progress",
                    ],
                    check=True,
                    capture_output=True,
                )
        meta = json.loads((self.data / "dataset.json").read_text())
        self.drifted = self.work / f"data-drift{o.drift:g}"
        subprocess.run(
            [
                str(bin_dir / "forkcast-data"),
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
        baseline_run = train(
            self.data,
            cache / f"baseline-{meta['fingerprint'][:12]}-e{o.baseline_epochs}",
            bin_dir,
            "--epochs",
            str(o.baseline_epochs),
        )
        self.baseline_run = baseline_run
        # The comparison: the model the drill used to retrain, on a generated drifted dataset (trained once per
        # cache, as releases.train does, while the platform starts and serves; stopped by close).
        self.drifted_run = cache / f"drifted{o.drift:g}-{meta['fingerprint'][:12]}-e{o.baseline_epochs}"
        if not (self.drifted_run / "metrics.json").is_file():
            self.comparison = spawn(
                [str(bin_dir / "forkcast-retrain"), "all", "--data", str(self.drifted), "--out",
                 str(self.drifted_run), "--no-progress", "--epochs", str(o.baseline_epochs)],
                log=self.work / "drifted-model.log",
            )  # fmt: skip
        tl.mark("datasets and the baseline run", base=str(self.data), drifted=str(self.drifted))

        # The platform of the render, with the drill's clients admitted in the gateway's key file.
        self.config.root.mkdir(parents=True, exist_ok=True)
        _ensure_gitops(self.config)
        self.platform = prepare(self.config)
        self.platform.secrets.admit_keys(self.keys)
        self.platform = self._up()
        receiver = self.platform.plan("alert-receiver").env
        if receiver.get("FORKCAST_GITLAB_URL") != self.gitlab.url:
            raise DrillError(
                f"the receiver's FORKCAST_GITLAB_URL is {receiver.get('FORKCAST_GITLAB_URL')}, "
                f"not the drill's GitLab {self.gitlab.url}: is it still {GITLAB_HOST}:{GITLAB_PORT}?"
            )
        self.gitlab.expect(
            receiver["FORKCAST_GITLAB_PROJECT_ID"],
            self.platform.secrets.value("forkcast-gitlab-trigger", "token").strip(),
        )
        tl.mark("platform up (manifests/overlays/local)", components=len(self.platform.components))
        lake_env = self.platform.client_env() | {
            "FORKCAST_LAKE_URI": self.platform.plan("lake-compact").env["FORKCAST_LAKE_URI"]
        }
        self.lake = Lake(
            lake_env,
            self.platform.localise(self.platform.secrets.value("forkcast-redis-online-auc", "events-url")),
            bin_dir,
        )
        self._cli("forkcast-features", "load", "--data", str(self.data), "--activate", "--no-progress")
        self.v1 = self.pipeline("baseline", self.data, {}).bootstrap(baseline_run)["version"]
        self.platform = self._up()  # the inference pod on the release commit
        self._ready("inference", "gateway")
        stable, _, _ = release_of(self.config)
        tl.mark("serving", version=self.v1, gateway=self.platform.url("gateway"))
        self._start_clients()
        prom = Prom(self.platform.url("prometheus"))
        events = self.platform.localise
        self.clicks = Clicks(
            events(self.platform.secrets.value("forkcast-redis-online-auc", "events-url")),
            events(self.platform.secrets.value("forkcast-redis-gateway", "events-url")),
            self.data,
        ).start()
        traffic_at = tl.mark("clients through the gateway, clicks on the events Redis", keys=CLIENT_KEYS)

        # Pre-drift level: a full window of feedback on the served version.
        wait(
            lambda: time.time() - traffic_at >= o.window_s and prom.auc(self.v1),
            o.window_s + 120,
            f"the online AUC of {self.v1}",
        )
        time.sleep(3)
        pre = prom.auc(self.v1, over_s=3)
        assert pre is not None
        tl.mark("online AUC steady (pre-drift)", auc=round(pre, 4), samples=int(prom.samples(self.v1)))
        r["versions"] = {"before": self.v1}
        r["auc"] = {"pre_drift": pre, "min_gain": o.min_gain, "min_drop": o.min_drop}
        if prom.firing():
            raise DrillError(
                f"{ALERT} fires before any drift (AUC {pre:.3f}): the drill cannot measure detection"
            )

        # Drift: the world moves, the served features and model do not.
        assert self.clicks is not None
        self.clicks.set_drift(o.drift)
        drift_at = self.drift_at = tl.mark("drift injected", simulator_drift=o.drift)
        low = pre - o.min_drop
        visible = wait(
            lambda: a if (a := prom.auc(self.v1)) is not None and a <= low else None,
            180,
            f"AUC ≤ {low:.3f}",
            0.25,
        )
        visible_at = tl.mark("AUC drop visible in the window", auc=round(visible, 4))
        firing = wait(prom.firing, 180, f"{ALERT} firing", 0.25)
        fired_at = tl.mark(f"{ALERT} firing (Prometheus)", alerts=len(firing))
        drifted_auc = prom.auc(self.v1, over_s=3)
        wait(lambda: self.gitlab.calls, 120, "the GitLab trigger", 0.25)
        trigger_at = self.gitlab.calls[0].at
        r["auc"] |= {"drifted": drifted_auc, "drop": pre - (drifted_auc or pre)}
        r["alert"] = {
            "visible_at": visible_at,
            "fired_at": fired_at,
            "trigger_at": trigger_at,
            "firing_delay_s": trigger_at - visible_at,
            "drift_to_trigger_s": trigger_at - drift_at,
            "prometheus_firing_delay_s": fired_at - visible_at,
        }

        # The pipeline runs in its thread (stages marked as they end); then the release reaches the users.
        wait(self.retrain_done.is_set, o.timeout_s, "the retraining pipeline", 0.5)
        if self.retrain_error is not None:
            raise DrillError(f"retraining pipeline failed: {self.retrain_error}") from self.retrain_error
        v2 = self.retrain["version"]
        r["retrain_data"] = str(next(p.data for p in self.pipelines if p.run.name == "retrain"))
        r["retrain"] = {k: v for k, v in self.retrain.items() if k != "gate_ci"} | {
            "gate_ci": {k: v for k, v in self.retrain["gate_ci"].items() if k != "checks"}
        }

        # The canary of the rendered Rollout, from the release commit of v1 to that of v2.
        canary, stack, spec = release_of(self.config)
        tl.mark("canary rehearsal of the release commit", version=v2, time_scale=o.time_scale)
        update = Update(
            stack,
            spec,
            stable,
            canary,
            data=self.data,
            work=self.work / "canary",
            time_scale=o.time_scale,
            traffic=Traffic(rate_per_s=o.rate, keys=CLIENT_KEYS),
            world_drift=o.drift,
        )
        self.canary = rehearse(update, timeout_s=o.timeout_s)
        status = self.canary.status
        r["rollout"] = {
            "phase": status.phase,
            "weight": status.weight,
            "step": status.step_index,
            "verdict": vars(status.verdict) if status.verdict else None,
            "sent": self.canary.sent,
            "failed": self.canary.failed,
            "served": dict(self.canary.served),
            "seconds": self.canary.seconds,
        }
        if (status.phase, status.weight) != ("Healthy", 100):
            raise DrillError(f"canary not promoted: {status.phase} {status.message} ({status.verdict})")
        full_at = tl.mark("canary at 100 % (promoted)", seconds=round(self.canary.seconds, 1))
        r["retrain_to_100_s"] = full_at - trigger_at

        # One inference pod locally: the clients pause while `up` replaces it with the release commit's.
        self._stop_clients("before the roll")
        self.platform = self._up()
        self._ready("inference")
        self._start_clients()
        tl.mark("platform inference on the promoted release", version=v2)

        # The bar: the served version's online AUC on the drifted traffic the new one learnt from, plus a gain.
        old = r["auc"]["served_on_drifted"]
        if old is None:
            raise DrillError(f"no online AUC of {self.v1} on the drifted traffic: too few labelled pairs")
        bar = old + o.min_gain

        def recovered() -> float | None:
            a = prom.auc(v2, over_s=3)
            ok = a is not None and a >= bar and prom.samples(v2) >= o.min_samples
            return a if ok else None

        after = wait(recovered, o.window_s + 120, f"online AUC of {v2} ≥ {bar:.3f}")
        tl.mark("online AUC recovered", version=v2, auc=round(after, 4))
        r["versions"]["after"] = v2
        r["auc"]["recovered"] = after
        r["alert_episodes"] = prom.episodes(self.tl.t0)
        r["lake_check"] = self.lake_check(v2)
        r["same_traffic"] = self.same_traffic()
        return r

    def lake_check(self, version: str) -> dict[str, Any]:
        """The online AUC the job exports for ``version`` against the lake's recomputation, same window.

        The job's window at its time ``now`` holds the pairs predicted at or after ``now - window_s``; the drill
        never learns that ``now`` to the microsecond, so it makes the window's content known instead: traffic
        pauses until the job has dropped ``version``'s window (every pair older than the window), then a burst
        shorter than the window runs from ``since``; once the job has been handed every event, it is read again
        and again until just before ``since + window_s``, and the last read that ended before then counts, so its
        window is exactly the burst's labelled pairs, computed as late as the window allows.
        """
        o, lake = self.o, self.lake
        assert lake is not None
        job = job_settings(self._auc_env())
        url = self.platform.url("online-auc")
        burst_s = o.burst_s if o.burst_s is not None else min(o.window_s / 3, 5.0)
        self._stop_clients("before the lake check")
        lake.wait_clicked(SIMULATOR_GROUP, lake.last_id(PREDICTIONS_STREAM), 60)
        wait(
            lambda: job_figures(url, version) is None,
            o.window_s + 60,
            f"the job's window of {version} empty",
            0.25,
        )
        since = self.tl.mark("lake check: the job's window empty, burst starts", burst_s=burst_s)
        self._start_clients()
        time.sleep(burst_s)
        self._stop_clients("the lake check's burst")
        lake.wait_clicked(SIMULATOR_GROUP, lake.last_id(PREDICTIONS_STREAM), 60)
        until = time.time()  # every prediction of the burst is stamped before this
        group = job["group"]
        wait(
            lambda: lake.read_all(PREDICTIONS_STREAM, group) and lake.read_all(FEEDBACK_STREAM, group),
            60,
            "the online-AUC job to read every event",
            0.1,
        )
        # Not one read a fixed pause after that (its next estimate was assumed to hold them; a starved job may
        # take longer): the last read that ended before the window's horizon, the job's latest estimate of it.
        time.sleep(float(job["compute_every_s"]) + 0.5)
        figures = job_figures(url, version)
        read_at = time.time()  # after the read: the estimate it returned was computed before this
        while time.time() + LAKE_READ_EVERY_S < since + o.window_s - LAKE_READ_MARGIN_S:
            time.sleep(LAKE_READ_EVERY_S)
            latest = job_figures(url, version)
            if time.time() - o.window_s >= since:
                break  # this read ended past the horizon: the one before it counts
            figures, read_at = latest, time.time()
        if read_at - o.window_s >= since:
            raise DrillError(
                f"the job was read {read_at - since:.1f} s after the burst began, not within its {o.window_s:g} s "
                "window: its horizon may have passed the burst's first predictions (raise --window-s)"
            )
        if figures is None:
            raise DrillError(f"the online-AUC job exports no window for {version} after the burst")
        committed = lake.wait_committed((PREDICTIONS_STREAM, FEEDBACK_STREAM), 120)
        recomputed, raw = lake.online_auc(version, since, until, job)
        self.tl.mark("lake check: online AUC recomputed from the lake", job=figures.auc, lake=recomputed.auc)
        return {
            "version": version,
            "since": since,
            "until": until,
            "job_read_at": read_at,
            "job": vars(figures),
            "lake": vars(recomputed),
            "lake_cli": raw,
            "committed": committed,
            "job_settings": job,
            "abs_diff": abs(figures.auc - recomputed.auc)
            if figures.auc is not None and recomputed.auc is not None
            else None,
        }

    def same_traffic(self) -> dict[str, Any]:
        """Test metrics of the served, the retrained and the generated-drift models on the held-out pairs of the
        training table (drill_score: the gate's scorer, in a child process)."""
        drifted_run = self.drifted_run
        if self.comparison is not None:
            # Its status may be gone (subprocess reaps children whose Popen was dropped): the run's metrics.json,
            # written last by `forkcast-retrain all`, says whether it trained.
            wait_exit(self.comparison)
            self.comparison = None
        if not (drifted_run / "metrics.json").is_file():
            raise DrillError(
                f"training on the generated drifted dataset failed; see {self.work}/drifted-model.log"
            )
        retrain_run = self.work / "runs" / "retrain"
        models = {"served (before)": self.baseline_run, "retrained on the served log": retrain_run,
                  "trained on a generated drifted dataset": drifted_run}  # fmt: skip
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "forkcast_local.drill_score",
                str(retrain_run),
                *map(str, models.values()),
            ],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise DrillError(
                f"scoring the models on the served log's held-out pairs failed: {proc.stderr[-2000:]}"
            )
        scores = json.loads(proc.stdout)
        out = {name: scores[str(path)] for name, path in models.items()}
        self.tl.mark("models scored on the served log's held-out pairs",
                     **{k: round(v["roc_auc"], 4) for k, v in out.items()})  # fmt: skip
        return out

    def close(self) -> None:
        self._stop_clients("after the roll")
        if self.clicks is not None:
            self.clicks.stop()
        if self.lake is not None:
            self.lake.close()
        if self.comparison is not None:
            stop_process(self.comparison)
        for p in self.pipelines:
            p.stop()
        self.gitlab.close()
        if self.started_platform:
            down(self.config, log=lambda line: None)


def checks(r: dict[str, Any]) -> dict[str, bool]:
    """The drill's targets, each passed or not."""
    auc, alert, retrain, lake = r["auc"], r["alert"], r["retrain"], r["lake_check"]
    job, recomputed = lake["job"], lake["lake"]
    same = {k: job[k] == recomputed[k] for k in ("samples", "positives", "excluded")}
    return {
        "zero failed client requests": r["client"]["failed"] == 0,
        "one alert episode, for the served version": r["alert_episodes"] == {r["versions"]["before"]: 1},
        "exactly one retrain trigger": r["triggers"] == 1,
        f"AUC drop ≥ {auc['min_drop']}": auc["pre_drift"] - auc["drifted"] >= auc["min_drop"],
        "alert within 120 s of the drop becoming visible": alert["firing_delay_s"] <= 120,
        "gate passed": bool(retrain.get("gate_passed")),
        "overlay changed to the new version": bool(retrain.get("overlay_changed")),
        "canary promoted to 100 %": (r["rollout"]["phase"], r["rollout"]["weight"]) == ("Healthy", 100),
        f"retrain-to-100 % ≤ {r['retrain_target_s']:g} s": r["retrain_to_100_s"] <= r["retrain_target_s"],
        f"new version's online AUC ≥ the served one's on the drifted traffic + {auc['min_gain']}": auc[
            "recovered"
        ]
        >= auc["served_on_drifted"] + auc["min_gain"],
        "retrained on the served log's training table": r["retrain_data"] == r["training_table"]["out"]
        and r["training_table"]["preset"] == "served-log"
        and min(r["training_table"]["rows"].values()) > 0,
        f"job's online AUC = the lake's (same pairs, |Δ| ≤ {AUC_MATCH:g})": all(same.values())
        and lake["abs_diff"] is not None
        and lake["abs_diff"] <= AUC_MATCH,
    }


def run(args: argparse.Namespace) -> int:
    # A fresh state directory per run: no S3 version, release or feature of an earlier run takes part.
    work = (Path(args.work) / time.strftime("%Y%m%d-%H%M%S")).resolve()
    work.mkdir(parents=True, exist_ok=True)

    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupted)
    e2e = EndToEnd(args, work)
    ok = False
    try:
        report = e2e.run()
        ok = True
    except (Exception, KeyboardInterrupt) as exc:  # reported, after every process is stopped
        report = e2e.report | {"error": f"{type(exc).__name__}: {exc}"}
        print(f"drill FAILED: {type(exc).__name__}: {exc}", flush=True)
    finally:
        e2e.close()
        signal.signal(signal.SIGTERM, previous)
    if e2e.clicks is not None and e2e.clicks.error is not None:
        ok, report["error"] = False, f"the click simulator failed: {e2e.clicks.error!r}"
    phases = e2e.phases + (
        [
            {
                "phase": "canary",
                "sent": e2e.canary.sent,
                "failed": e2e.canary.failed,
                "versions": dict(e2e.canary.served),
            }
        ]
        if e2e.canary
        else []
    )
    versions: dict[str, int] = {}
    for phase in phases:
        for version, n in phase["versions"].items():
            versions[version] = versions.get(version, 0) + n
    report |= {
        "stages": e2e.tl.stages,
        "triggers": len(e2e.gitlab.calls),
        "gitlab_refused": e2e.gitlab.refused,
        "client": {
            "sent": sum(p["sent"] for p in phases),
            "failed": sum(p["failed"] for p in phases),
            "versions": versions,
            "phases": phases,
        },
        "pipelines": {p.run.name: p.result for p in e2e.pipelines},
        "work": str(work),
    }
    report["checks"] = checks(report) if ok else {}
    report["ok"] = ok and all(report["checks"].values())
    base = args.report or work / "report"
    write_report(report, base)
    failed = [name for name, passed in report["checks"].items() if not passed]
    print(f"drill {'PASSED' if report['ok'] else 'FAILED'}{': ' + ', '.join(failed) if failed else ''}")
    print(f"report: {base.with_suffix('.json')} and {base.with_suffix('.md')}")
    return 0 if report["ok"] else 1
