"""The drift job: served features and scores against the training profile of the model version that served them.

Every ``--every-s`` it samples the newest prediction events from the events Redis (XREVRANGE: stateless, nothing to
acknowledge, so a restart or a Redis outage loses nothing but one measurement), takes the users and restaurants
they name, fetches their features from the feature store in the features Redis (the same keys and bytes the
inference service read, via ``forkcast_contract.feature_store``), and computes per model version the PSI of each
model input against that version's ``data_profile.json`` and the PSI of the served scores against the version's
own scores on its probe set (``probe.npz``: training pairs scored at publish, as logits; compared as the
probabilities a client is served).
Features are counted once per entity, as the profile is.

On a Redis Cluster (``FORKCAST_REDIS_CLUSTER``, issue 19) user keys spread over every slot, so users are read with
one MGET per slot (redis-py's ``mget_nonatomic``), and a version's restaurants exist only as per-master copies
(``VersionMeta.restaurant_copies``): the job reads the version's FIRST copy — every copy holds the same values
(verified at load, and live updates write every copy) — through ``restaurant_copy_keys``, the keys every writer
uses; a version without copies (standalone) is read from its single table.

References (``references``): in a cluster each served version's files are downloaded from the model registry in
S3 on first sight and verified against its manifest; locally ``--reference-root`` names one directory per model
version id, holding the files ``forkcast-retrain export`` writes. A version without a reference, or whose files
fail to verify, is skipped and logged, never guessed.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import redis
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.cluster import RedisCluster

from forkcast_contract import drift
from forkcast_contract import metric_names as n
from forkcast_contract.feature_store import (
    DEFAULT_PREFIX,
    FeatureKeys,
    meta_key,
    restaurant_copy_keys,
    unpack_restaurants,
    unpack_users,
)
from forkcast_contract.features import MODEL_INPUTS, USER_FEATURE_COUNT
from forkcast_contract.registry_format import DATA_PROFILE_FILE, PROBE_FILE
from forkcast_contract.settings import redacted_url
from forkcast_contract.streams import PREDICTIONS_STREAM
from forkcast_monitoring.probes import all_ready, redis_ready, start_probe_server
from forkcast_monitoring.references import (
    DirectoryReferences,
    ReferenceSource,
    ReferenceUnavailableError,
    RegistryReferences,
)
from forkcast_monitoring.settings import DriftSettings
from forkcast_registry.registry import ModelRegistry
from forkcast_registry.settings import RegistrySettings

log = logging.getLogger("forkcast_monitoring.drift_job")
_MGET_CHUNK = 500


@dataclass(frozen=True)
class Reference:
    """The training reference of one model version: its feature profile and its probe-score histogram."""

    profile: dict[str, Any]
    scores: dict[str, list[float]] | None

    @classmethod
    def load(cls, directory: Path) -> Reference:
        profile = json.loads((directory / DATA_PROFILE_FILE).read_text())
        scores = None
        if (directory / PROBE_FILE).is_file():
            with np.load(directory / PROBE_FILE) as probe:
                # probe.npz holds logits, the events served probabilities: profile the probe as it is served.
                scores = drift.histogram(drift.served_scores(probe["scores"]))
        return cls(profile, scores)


@dataclass
class Sample:
    """What the newest events of one model version served: entity ids per feature version, and the scores."""

    events: int
    users: dict[str, set[int]]
    restaurants: dict[str, set[int]]
    scores: list[float]


@dataclass(frozen=True)
class Measurement:
    events: int
    feature_psi: dict[str, float]
    score_psi: float | None


def sample_events(client: redis.Redis, stream: str, count: int) -> dict[str, Sample]:
    """The newest ``count`` prediction events, grouped by model version; malformed entries are skipped."""
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrevrange(stream, count=count))
    out: dict[str, Sample] = {}
    for _id, fields in entries:
        try:
            model, fv = fields[b"model"].decode(), fields[b"fv"].decode()
            user = int(fields[b"user"])
            ids = [int(i) for i in json.loads(fields[b"ids"])]
            scores = [float(s) for s in json.loads(fields[b"scores"])]
        except (KeyError, ValueError, TypeError, UnicodeDecodeError):
            continue
        if not model or not fv or len(ids) != len(scores):
            continue
        s = out.setdefault(model, Sample(0, {}, {}, []))
        s.events += 1
        s.users.setdefault(fv, set()).add(user)
        s.restaurants.setdefault(fv, set()).update(ids)
        s.scores.extend(x for x in scores if np.isfinite(x))
    return out


FeatureClient = redis.Redis | RedisCluster


def features_client(url: str, cluster: bool) -> FeatureClient:
    """The features Redis: a Cluster client (discovering every node from the URL's) when ``cluster``."""
    return RedisCluster.from_url(url) if cluster else redis.Redis.from_url(url)


def _mget(client: FeatureClient, keys: list[str]) -> list[bytes]:
    values: list[bytes] = []
    for i in range(0, len(keys), _MGET_CHUNK):
        chunk = keys[i : i + _MGET_CHUNK]
        # On a Cluster the keys span slots: one MGET per slot (the reads need not be atomic for a drift sample).
        got = cast(
            list[bytes | None],
            client.mget_nonatomic(chunk) if isinstance(client, RedisCluster) else client.mget(chunk),
        )
        values += [v for v in got if v is not None]  # evicted or unknown entities: nothing to measure
    return values


def _restaurant_keys(client: FeatureClient, prefix: str, version: str) -> FeatureKeys:
    """The restaurant keys to read for ``version``: its first Cluster copy, or its single table."""
    # HGETALL, not HGET: the drift ACL user reads metadata hashes whole, as the inference service does.
    meta = cast(dict[bytes, bytes], client.hgetall(meta_key(prefix, version)))
    copies = meta.get(b"restaurant_copies", b"").decode()
    return restaurant_copy_keys(FeatureKeys(prefix, version), copies)[0]


def served_features(client: FeatureClient, prefix: str, sample: Sample) -> dict[str, npt.NDArray[np.float32]]:
    """Columns by model-input name: the features of the sample's users and restaurants, once per entity."""
    users, rests = [], []
    for fv, ids in sample.users.items():
        keys = FeatureKeys(prefix, fv)
        users += _mget(client, [keys.user(i) for i in sorted(ids)])
    for fv, ids in sample.restaurants.items():
        keys = _restaurant_keys(client, prefix, fv)
        rests += _mget(client, [keys.restaurant(i) for i in sorted(ids)])
    columns: dict[str, npt.NDArray[np.float32]] = {}
    try:
        u, r = unpack_users(users), unpack_restaurants(rests).features
    except ValueError as exc:  # a corrupt value: measure nothing rather than something wrong
        log.warning("feature values do not unpack: %s", exc)
        return columns
    for i, name in enumerate(MODEL_INPUTS):
        column = u[:, i] if i < USER_FEATURE_COUNT else r[:, i - USER_FEATURE_COUNT]
        if len(column):
            columns[name] = column
    return columns


class DriftJob:
    """One measurement per ``measure`` call; the loop, the tests and the collector share its last result.

    ``client`` is the features Redis; ``events`` the events Redis holding the prediction stream (the same server
    when not given, as in a one-Redis setup).
    """

    def __init__(
        self,
        client: FeatureClient,
        references: ReferenceSource,
        *,
        events: redis.Redis | None = None,
        sample_events: int = 5000,
        min_events: int = 200,
        prefix: str = DEFAULT_PREFIX,
        stream: str = PREDICTIONS_STREAM,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client, self.source, self.sample_size, self.min_events = (
            client,
            references,
            sample_events,
            min_events,
        )
        self.prefix, self.stream, self.clock = prefix, stream, clock
        if events is None:  # one Redis for both; the prediction stream never lives in a features Cluster
            if isinstance(client, RedisCluster):
                raise ValueError("a features Redis Cluster needs the events Redis given separately")
            events = client
        self.events = events
        self.references: dict[str, Reference | None] = {}
        self.results: dict[str, Measurement] = {}
        self.last_run = 0.0

    def reference(self, version: str) -> Reference | None:
        """The version's reference, looked up once; None (skipped) when it has none. A source that cannot be
        asked now (S3 down) is asked again at the next measurement."""
        if version not in self.references:
            try:
                directory = self.source.directory(version)
            except ReferenceUnavailableError as exc:
                log.warning(
                    "reference of model version %r unavailable now (%s): skipped this time", version, exc
                )
                return None
            self.references[version] = Reference.load(directory) if directory is not None else None
            if directory is None:
                log.warning(
                    "no training reference for model version %r in %s: skipped",
                    version,
                    self.source.describe(),
                )
        return self.references[version]

    def measure(self) -> dict[str, Measurement]:
        """Sample, fetch and compare; versions without a reference or with too few events get no result."""
        results = {}
        for version, sample in sample_events(self.events, self.stream, self.sample_size).items():
            ref = self.reference(version)
            if ref is None or sample.events < self.min_events:
                continue
            columns = served_features(self.client, self.prefix, sample)
            feature_psi = drift.psi_per_feature(ref.profile, columns)
            score_psi = None
            if ref.scores is not None and sample.scores:
                score_psi = drift.psi_against(ref.scores, np.asarray(sample.scores, dtype=np.float64))
            results[version] = Measurement(sample.events, feature_psi, score_psi)
        self.results, self.last_run = results, self.clock()
        return results

    def run(self, every_s: float, stop: Callable[[], bool] = lambda: False) -> None:
        """Measure every ``every_s`` until ``stop()``; Redis errors are logged and waited out."""
        while not stop():
            try:
                self.measure()
            except redis.RedisError as exc:
                log.warning("drift measurement failed (%s); next try in %.0f s", exc, every_s)
            time.sleep(every_s)


class DriftCollector(Collector):
    def __init__(self, job: DriftJob) -> None:
        self.job = job

    def collect(self) -> Iterator[Metric]:
        feature = GaugeMetricFamily(
            n.DRIFT_FEATURE_PSI, "PSI of served features vs training", labels=["model_version", "feature"]
        )
        score = GaugeMetricFamily(
            n.DRIFT_SCORE_PSI, "PSI of served scores vs the probe scores", labels=["model_version"]
        )
        events = GaugeMetricFamily(
            n.DRIFT_SAMPLE_EVENTS, "Prediction events in the last sample", labels=["model_version"]
        )
        for version, m in sorted(self.job.results.items()):
            events.add_metric([version], m.events)
            for name, value in m.feature_psi.items():
                feature.add_metric([version, name], value)
            if m.score_psi is not None:
                score.add_metric([version], m.score_psi)
        last = GaugeMetricFamily(n.DRIFT_LAST_RUN_TIME, "Unix time of the last drift measurement")
        last.add_metric([], self.job.last_run)
        yield from (feature, score, events, last)


def references_from(settings: DriftSettings) -> ReferenceSource:
    """A local reference root when one is set, else the S3 model registry (forkcast_registry's settings)."""
    if settings.drift_reference_root is not None:
        return DirectoryReferences(settings.drift_reference_root)
    return RegistryReferences(ModelRegistry.from_settings(RegistrySettings()))


def main(argv: list[str] | None = None) -> int:
    s = DriftSettings()
    parser = argparse.ArgumentParser(prog="forkcast-drift", description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default=s.redis_url, help="the features Redis (REDIS_URL)")
    parser.add_argument(
        "--events-redis-url",
        default=s.events_url,
        help="the Redis of the prediction stream (FORKCAST_EVENTS_REDIS_URL, else REDIS_URL)",
    )
    parser.add_argument(
        "--reference-root",
        type=Path,
        default=s.drift_reference_root,
        help="one directory per model version (FORKCAST_DRIFT_REFERENCE_ROOT); unset: the S3 model registry",
    )
    parser.add_argument(
        "--prefix", default=s.feature_prefix, help="feature-store key prefix (FORKCAST_FEATURE_PREFIX)"
    )
    parser.add_argument(
        "--sample", type=int, default=s.drift_sample, help="newest prediction events per measurement"
    )
    parser.add_argument(
        "--min-events", type=int, default=s.drift_min_events, help="no result for fewer events"
    )
    parser.add_argument("--every-s", type=float, default=s.drift_every_s, help="measurement period")
    parser.add_argument("--host", default=s.metrics_host, help="address the metrics port binds to")
    parser.add_argument(
        "--port", type=int, default=s.metrics_port, help="port of /metrics, /healthz, /readyz"
    )
    args = parser.parse_args(argv)
    s = s.model_copy(update={"drift_reference_root": args.reference_root})
    logging.basicConfig(level=s.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    references = references_from(s)
    job = DriftJob(
        features_client(args.redis_url, s.redis_cluster),
        references,
        events=redis.Redis.from_url(args.events_redis_url),
        sample_events=args.sample,
        min_events=args.min_events,
        prefix=args.prefix,
    )
    registry = CollectorRegistry()
    registry.register(DriftCollector(job))
    ready = all_ready(redis_ready(args.redis_url), redis_ready(args.events_redis_url))
    start_probe_server(args.host, args.port, registry, ready)
    log.info(
        "drift of the events in %s (features in %s) against %s, /metrics /healthz /readyz on %s:%d",
        redacted_url(args.events_redis_url),
        redacted_url(args.redis_url),
        references.describe(),
        args.host,
        args.port,
    )
    job.run(args.every_s)
    return 0
