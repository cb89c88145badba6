"""Two hours of simulated forkcast traffic as timestamped OpenMetrics, for the dashboard previews (render_png).

Each scraped target is a prometheus-client registry with the contract's metric names and the label names the
services use, stepped through time and collected every ``STEP_S`` seconds, as Prometheus would scrape it. The story
the panels should tell: a stable model version serves the first hour; a canary version joins on a second pod template
hash; after 90 minutes a user feature drifts, its PSI rises, the online AUC of both versions falls and the receiver
sends one retraining trigger (the rest held back by its cooldown). AUC and PSI are computed, not drawn: the AUC from
ranked simulated scores and clicks over a sliding window, the PSI with forkcast_contract.drift. Every series carries
the namespace the dashboard opens on (``dashboards.DEFAULT_NAMESPACE``), as the operator labels a scraped pod's.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from forkcast_contract import drift
from forkcast_contract import metric_names as m
from forkcast_monitoring.dashboards import DEFAULT_NAMESPACE

STEP_S = 30
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0)
STABLE, CANARY = ("5f7c9d8b4", "20260301T000000Z-1a2b"), ("8b2e41c6d", "20260315T000000Z-3c4d")
FEATURES = ("user.f01", "user.f02", "restaurant.f01")
AUC_WINDOW, AUC_MIN = 6000, 2000


@dataclass
class Target:
    """One scraped endpoint: its registry and the target labels Prometheus would attach."""

    labels: dict[str, str]
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)


def auc_with_interval(scores: np.ndarray, clicks: np.ndarray) -> tuple[float, float, float]:
    """Mann-Whitney AUC with Hanley-McNeil's 95 % interval (the online-AUC job's estimator)."""
    ranks = np.empty(len(scores))
    ranks[np.argsort(scores)] = np.arange(1, len(scores) + 1)
    n_pos, n_neg = int(clicks.sum()), int((~clicks).sum())
    auc = (ranks[clicks].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) / (n_pos * n_neg)
    half = 1.96 * math.sqrt(max(var, 0.0))
    return float(auc), float(auc - half), float(auc + half)


class Simulation:
    """The services' metrics, advanced one scrape interval at a time."""

    def __init__(self, start: float, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.start = start
        self.gateway = Target({"job": "gateway", "instance": "gateway-0"})
        r = self.gateway.registry
        self.requests = Counter(m.GATEWAY_REQUESTS_TOTAL, "", ["route", "method", "status_class"], registry=r)
        self.gw_seconds = Histogram(
            m.GATEWAY_REQUEST_DURATION_SECONDS, "", ["route", "status_class"], buckets=BUCKETS, registry=r
        )
        self.pods = {h: self.pod(h, v) for h, v in (STABLE, CANARY)}
        self.auc_job = Target({"job": "online-auc", "instance": "online-auc-0"})
        r = self.auc_job.registry
        self.auc = {
            n: Gauge(n, "", ["model_version"], registry=r) for n in (m.ONLINE_AUC, m.ONLINE_AUC_LOWER)
        }
        self.auc |= {n: Gauge(n, "", ["model_version"], registry=r) for n in (m.ONLINE_AUC_UPPER,)}
        self.samples = Gauge(m.ONLINE_AUC_SAMPLES, "", ["model_version"], registry=r)
        self.positives = Gauge(m.ONLINE_AUC_POSITIVES, "", ["model_version"], registry=r)
        self.pairs: dict[str, deque[tuple[float, bool]]] = {
            v: deque(maxlen=AUC_WINDOW) for _, v in (STABLE, CANARY)
        }
        self.drift_job = Target({"job": "drift", "instance": "drift-0"})
        r = self.drift_job.registry
        self.feature_psi = Gauge(m.DRIFT_FEATURE_PSI, "", ["model_version", "feature"], registry=r)
        self.score_psi = Gauge(m.DRIFT_SCORE_PSI, "", ["model_version"], registry=r)
        self.reference = self.rng.normal(size=20_000)
        self.edges = drift.edges_of(self.reference)
        self.ref_scores = self.rng.normal(size=20_000)
        self.receiver = Target({"job": "alert-receiver", "instance": "alert-receiver-0"})
        self.triggers = Counter(m.RETRAIN_TRIGGERS_TOTAL, "", ["outcome"], registry=self.receiver.registry)
        self.triggered = False

    def pod(self, pod_hash: str, version: str) -> tuple[Target, Histogram]:
        target = Target(
            {"job": "inference", "instance": f"inference-{pod_hash}", "rollouts_pod_template_hash": pod_hash}
        )
        r = target.registry
        seconds = Histogram(m.INFERENCE_REQUEST_SECONDS, "", ["status"], buckets=BUCKETS, registry=r)
        Info(m.INFERENCE_SERVED, "", registry=r).info(
            {"model_version": version, "feature_version": "fv3", "provenance": "registry"}
        )
        published = Gauge(m.INFERENCE_MODEL_PUBLISHED_TIME, "", ["model_version"], registry=r)
        published.labels(version).set(self.start - (3 * 86400 if pod_hash == STABLE[0] else 3600))
        # Test-set AUC at training, a little above the simulated online level: the panel's alert floor sits 0.05 under.
        offline = Gauge(m.INFERENCE_MODEL_OFFLINE_AUC, "", ["model_version"], registry=r)
        offline.labels(version).set(0.805 if pod_hash == STABLE[0] else 0.815)
        return target, seconds

    def targets(self, minute: float) -> list[Target]:
        live = [self.pods[STABLE[0]][0]] + ([self.pods[CANARY[0]][0]] if minute >= 60 else [])
        return [self.gateway, *live, self.auc_job, self.drift_job, self.receiver]

    def step(self, minute: float) -> None:
        """One scrape interval of traffic: requests, latencies, clicks, drift."""
        drifted = minute >= 90
        rate = 40 + 15 * math.sin(minute / 20)  # requests/s, a slow daily-like swing
        for status, share in (
            ("2xx", 0.985),
            ("4xx", 0.01),
            ("5xx", 0.005 + (0.02 if 70 <= minute < 75 else 0)),
        ):
            n = int(self.rng.poisson(rate * STEP_S * share))
            self.requests.labels("/recommend", "POST", status).inc(n)
            for s in self.rng.lognormal(math.log(0.03), 0.5, size=n):
                self.gw_seconds.labels("/recommend", status).observe(float(s))
            versions = [(STABLE, 0.8), (CANARY, 0.2)] if minute >= 60 else [(STABLE, 1.0)]
            for (pod_hash, _), part in versions:
                latency = self.rng.lognormal(
                    math.log(0.012 if pod_hash == STABLE[0] else 0.015), 0.4, int(n * part)
                )
                for s in latency:
                    self.pods[pod_hash][1].labels(status).observe(float(s))
        self.clicks(minute, drifted)
        self.measure_drift(drifted)
        if drifted and minute >= 95:
            self.triggers.labels("sent" if not self.triggered else "cooldown").inc()
            self.triggered = True

    def clicks(self, minute: float, drifted: bool) -> None:
        for (_, version), n in ((STABLE, 400), (CANARY, 150 if minute >= 60 else 0)):
            signal = self.rng.normal(size=n)
            clicked = self.rng.random(n) < 1 / (1 + np.exp(-(2 * signal - 2)))
            noise = 1.6 if drifted else (0.7 if version == STABLE[1] else 0.6)
            scores = signal + self.rng.normal(scale=noise, size=n)
            self.pairs[version].extend(zip(scores.tolist(), clicked.tolist(), strict=True))
            pairs = self.pairs[version]
            if len(pairs) < AUC_MIN:
                continue  # the job exports nothing below its minimum: the panel shows a gap, not 0.5
            s, c = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
            auc, low, high = auc_with_interval(s, c)
            self.auc[m.ONLINE_AUC].labels(version).set(auc)
            self.auc[m.ONLINE_AUC_LOWER].labels(version).set(low)
            self.auc[m.ONLINE_AUC_UPPER].labels(version).set(high)
            self.samples.labels(version).set(len(pairs))
            self.positives.labels(version).set(int(c.sum()))

    def measure_drift(self, drifted: bool) -> None:
        expected = drift.shares(self.reference, self.edges)
        for feature in FEATURES:
            shift = 0.6 if drifted and feature == "user.f01" else 0.0
            served = self.rng.normal(loc=shift, size=3000)
            self.feature_psi.labels(STABLE[1], feature).set(
                drift.psi(expected, drift.shares(served, self.edges))
            )
        scores = self.rng.normal(loc=0.3 if drifted else 0.0, size=3000)
        ref = drift.edges_of(self.ref_scores)
        psi = drift.psi(drift.shares(self.ref_scores, ref), drift.shares(scores, ref))
        self.score_psi.labels(STABLE[1]).set(psi)


def simulate(start: float, end: float, seed: int) -> str:
    """OpenMetrics text with every family's samples, in time order, from ``start`` to ``end``."""
    sim = Simulation(start, seed)
    families: dict[str, tuple[str, list[str]]] = {}
    t = start
    while t <= end:
        minute = (t - start) / 60
        sim.step(minute)
        for target in sim.targets(minute):
            for family in target.registry.collect():
                kind, lines = families.setdefault(family.name, (family.type, []))
                for sample in family.samples:
                    if sample.name.endswith("_created"):
                        continue
                    labels = {"namespace": DEFAULT_NAMESPACE, **target.labels, **sample.labels}
                    text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
                    lines.append(f"{sample.name}{{{text}}} {sample.value} {t:.3f}")
        t += STEP_S
    out = []
    for name, (kind, lines) in families.items():
        out.append(f"# TYPE {name} {kind}")
        out.extend(sorted(lines, key=series_then_time))
    out.append("# EOF")
    return "\n".join(out) + "\n"


def series_then_time(line: str) -> tuple[str, float]:
    """OpenMetrics wants each series' samples together and in time order."""
    head, _, ts = line.rpartition(" ")
    return head.rpartition(" ")[0], float(ts)
