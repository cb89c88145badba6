"""The online-AUC job: prediction events joined with click feedback, ROC-AUC per model version, on /metrics.

Reads both Redis streams from the events Redis (FORKCAST_EVENTS_REDIS_URL, else REDIS_URL) through one consumer
group each (XREADGROUP), joins them (``join``: same request, same restaurant, same API key), keeps a sliding
event-time window per model version (``window``: no API key holds more than FORKCAST_AUC_MAX_KEY_SHARE of the pairs
an estimate uses; the recent window also carries the range of its AUC with each single key left out, which the
canary analysis reads) and exports the estimates at every scrape. A restart first
re-reads its own pending entries (id ``0``), so predictions still inside the attribution window are joined again;
feedback is acknowledged once joined or given up, so nothing is counted twice. A Redis outage or restart (an empty
server, a lost group) is waited out and the group re-created; it never ends the process.
"""

from __future__ import annotations

import argparse
import gc
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from itertools import groupby
from operator import itemgetter
from typing import cast

import numpy as np
import numpy.typing as npt
import redis
from hiredis import pack_command
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from forkcast_contract import metric_names as n
from forkcast_contract.settings import redacted_url
from forkcast_contract.streams import FEEDBACK_STREAM, PREDICTIONS_STREAM
from forkcast_monitoring.events import (
    as_fields,
    decode_feedback_batch,
    parse_feedback_flat,
    parse_prediction,
)
from forkcast_monitoring.join import JoinConfig, JoinedBatch, Joiner, Pair
from forkcast_monitoring.probes import redis_ready, start_probe_server
from forkcast_monitoring.settings import MonitoringSettings, get_settings
from forkcast_monitoring.window import Estimate, Window

log = logging.getLogger("forkcast_monitoring.online_auc")
# One stream's entries as XREADGROUP answers them: (entry id, [field, value, …]); None for an entry trimmed while
# pending.
Entries = list[tuple[bytes, list[bytes] | None]]
# One version's joined pairs as the window takes them: times, scores, labels, key codes.
Columns = tuple[
    npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.bool_], npt.NDArray[np.int32]
]


def _raw_reply(response: object, **options: object) -> object:
    """XREADGROUP's reply as the server sent it: the job decodes fields itself (``parse_feedback_flat``)."""
    return response


class OnlineAuc:
    """State and one step of the job; ``step`` is what the loop, the tests and the benchmark drive."""

    def __init__(
        self,
        client: redis.Redis,
        settings: MonitoringSettings,
        clock: Callable[[], float] = time.time,
        streams: tuple[str, str] = (PREDICTIONS_STREAM, FEEDBACK_STREAM),
        recent_window_s: float = n.ONLINE_AUC_RECENT_WINDOW_S,
    ) -> None:
        self.client, self.s, self.clock = client, settings, clock
        # The second, short window every version is also measured over (ONLINE_AUC_RECENT): canary vs stable.
        self.recent_window_s = recent_window_s
        self.recent: dict[str, Estimate] = {}
        # The same connections, but XREADGROUP's reply left as the server sent it (no dict per entry); a client
        # of its own so that callers' clients keep redis-py's parsing.
        self._reader = redis.Redis(connection_pool=client.connection_pool)
        self._reader.set_response_callback("XREADGROUP", _raw_reply)
        self.streams = {"predictions": streams[0], "feedback": streams[1]}
        self.joiner = Joiner(JoinConfig(settings.auc_attribution_s, settings.auc_max_skew_s))
        self.windows: dict[str, Window] = {}
        # API key id -> the small int a window stores per pair (key ids come from the gateway's key file: bounded).
        self.key_codes: dict[str, int] = {}
        self.dropped: Counter[str] = Counter()  # pairs dropped for good, by reason
        self.estimates: dict[str, Estimate] = {}
        self.backlog = True  # read our own pending entries (after a restart) before new ones
        self.last_event_time = 0.0
        self._next_compute = 0.0

    # -- Redis -----------------------------------------------------------------------------------------------
    def ensure_groups(self) -> None:
        for key in self.streams.values():
            try:
                self.client.xgroup_create(key, self.s.auc_group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def _read(self, block_ms: int | None, count: int) -> dict[str, Entries]:
        start = "0" if self.backlog else ">"
        reply = self._reader.xreadgroup(
            self.s.auc_group,
            self.s.auc_consumer,
            {key: start for key in self.streams.values()},
            count=count,
            block=None if self.backlog else block_ms,
        )
        names = {v: k for k, v in self.streams.items()}
        out: dict[str, Entries] = {"predictions": [], "feedback": []}
        streams = reply.items() if isinstance(reply, dict) else reply or []  # RESP3 answers a map
        for key, entries in cast(list[tuple[bytes, Entries]], streams):
            out[names[key.decode()]] = entries
        if self.backlog and not any(out.values()):
            self.backlog = False  # our pending entries are all re-read: on to new ones
            return self._read(block_ms, count)
        return out

    def _ack(self) -> None:
        """XACK of every entry the join let go, both streams in one round trip.

        Packed by hiredis and sent on a pooled connection: at ≈ 44 entries acknowledged per prediction, redis-py's
        pipeline (its serializer inspects every argument in Python) cost ≈ 30 µs per prediction
        (process_time, 5,000 predictions, 2026-12-05); the inference's event sink packs its XADDs the same way.
        Every reply is read; on any error the connection is dropped (never reused out of step) and the error
        raised, which ``run`` waits out like a failed read: the entries stay pending and are re-read.
        """
        group = self.s.auc_group
        commands = [
            pack_command(("XACK", self.streams[stream], group, *ids))  # type: ignore[arg-type]
            for stream, ids in self.joiner.take_acks().items()
            if ids
        ]
        if not commands:
            return
        pool = self.client.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_packed_command([b"".join(commands)])  # type: ignore[no-untyped-call]
            for _ in commands:
                conn.read_response()
        except BaseException:
            conn.disconnect()  # type: ignore[no-untyped-call]
            raise
        finally:
            pool.release(conn)

    # -- one step ----------------------------------------------------------------------------------------------
    def step(self, block_ms: int | None = 1000, count: int = 2000) -> int:
        """Read, join and acknowledge one batch from each stream; returns how many entries were read."""
        # The cyclic GC is held off for the step: a batch allocates ~10^5 container objects (reply lists, events,
        # pairs), all freed by reference counting, and the default gen-0 threshold (700) ran hundreds of
        # collections per step that each walked the young objects and, every few, the pending predictions:
        # 40 µs of the 110 µs per prediction (bench, 20,000 predictions; 67-72 µs with the GC off). One
        # collection at most runs after the step instead, so garbage cycles, if any, still go.
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self._step(block_ms, count)
        finally:
            if enabled:
                gc.enable()

    def _step(self, block_ms: int | None, count: int) -> int:
        batches = self._read(block_ms, count)
        now = self.clock()
        joiner = self.joiner
        pairs: list[Pair] = []
        for entry_id, fields in batches["predictions"]:
            if not fields:  # trimmed from the stream (MAXLEN) while pending: nothing left to join
                joiner.counts[("predictions", "trimmed")] += 1
                joiner.to_ack["predictions"].append(entry_id)
                continue
            entry = as_fields(fields)
            prediction = None if entry is None else parse_prediction(entry)
            pairs += joiner.add_prediction(prediction, entry_id, now)
            if prediction is not None:
                self.last_event_time = max(self.last_event_time, min(prediction.time, now))
        feedback = batches["feedback"]
        batch = decode_feedback_batch(feedback) if feedback else None
        joined = None if batch is None else joiner.add_feedback_batch(batch, now)
        if batch is None:  # an entry the columnar decoder does not take: the whole read one by one
            add_feedback = joiner.add_feedback
            for entry_id, fields in feedback:
                pair = add_feedback(parse_feedback_flat(fields) if fields else None, entry_id, now)
                if pair is not None:
                    pairs.append(pair)
        self._add(pairs, joined)
        joiner.expire(now)
        self._ack()
        if now >= self._next_compute:
            self.compute(now)
        return sum(len(b) for b in batches.values())

    def _code(self, key_id: str) -> int:
        codes = self.key_codes
        return codes[key_id] if key_id in codes else codes.setdefault(key_id, len(codes))

    def _add(self, pairs: list[Pair], joined: JoinedBatch | None = None) -> None:
        """Hand the step's pairs to their windows, one batch per model version, in the order they were joined:
        ``pairs`` (feedback that waited for its prediction, and feedback joined one by one) before ``joined``."""
        by_version: dict[str, list[Columns]] = {}
        for version, run in groupby(pairs, key=itemgetter(0)):  # runs of one version: grouped in C
            _, times, scores, labels, key_ids = zip(*run, strict=True)
            keys = np.fromiter(map(self._code, key_ids), dtype=np.int32, count=len(key_ids))
            by_version.setdefault(version, []).append(
                (np.array(times), np.array(scores), np.array(labels, dtype=np.bool_), keys)
            )
        if joined is not None and len(joined.pending):
            owner_keys = np.fromiter(
                map(self._code, joined.key_ids), dtype=np.int32, count=len(joined.key_ids)
            )
            version_of: dict[str, int] = {}
            owner_version = np.fromiter(
                (version_of.setdefault(v, len(version_of)) for v in joined.versions),
                np.intp,
                len(joined.versions),
            )
            pair_version = owner_version[joined.pending]
            for version, code in version_of.items():
                take = pair_version == code
                if take.any():
                    by_version.setdefault(version, []).append(
                        (
                            joined.times[take],
                            joined.scores[take],
                            joined.clicked[take],
                            owner_keys[joined.pending[take]],
                        )
                    )
        for version, parts in by_version.items():
            window = self.windows.get(version)
            if window is None:
                window = self.windows[version] = Window(
                    self.s.auc_window_s, self.s.auc_max_samples, self.s.auc_max_key_share
                )
            columns = [np.concatenate(column) for column in zip(*parts, strict=True)]
            shed = window.shed
            window.extend(*columns)
            if window.shed > shed:
                self.dropped["capacity"] += window.shed - shed

    def compute(self, now: float) -> None:
        """Refresh the exported estimates; versions whose window emptied are dropped (bounded label set)."""
        estimates, recent = {}, {}
        since = now - self.recent_window_s
        for version, window in list(self.windows.items()):
            window.evict(now)
            if window.size == 0:
                del self.windows[version]
                continue
            estimates[version] = window.estimate(self.s.auc_min_samples, self.s.auc_min_per_class)
            recent[version] = window.estimate(
                self.s.auc_min_samples, self.s.auc_min_per_class, since, key_range=True
            )
        self.estimates, self.recent = estimates, recent
        self._next_compute = now + self.s.auc_compute_every_s

    def run(self, stop: Callable[[], bool] = lambda: False) -> None:
        """Step until ``stop()``; Redis errors are logged and waited out, never raised."""
        backoff = 0.5
        while not stop():
            try:
                self.ensure_groups()
                while not stop():
                    self.step(block_ms=200)
                    backoff = 0.5
            except redis.ResponseError as exc:
                # NOGROUP / UNBLOCKED: the stream or group vanished (Redis restarted empty, or flushed).
                log.warning("stream read refused (%s): re-creating the consumer groups", exc)
                time.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                self.backlog = True
            except redis.ConnectionError as exc:
                log.warning("Redis unavailable (%s); retrying in %.1f s", exc, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                self.backlog = True


def _by_version(name: str, documentation: str) -> GaugeMetricFamily:
    """A gauge with one series per model version (every per-version figure of the online-AUC job)."""
    return GaugeMetricFamily(name, documentation, labels=["model_version"])


class AucCollector(Collector):
    """Builds the metrics at scrape time from the job's last estimates: a version without enough data has no AUC."""

    def __init__(self, job: OnlineAuc) -> None:
        self.job = job

    def collect(self) -> Iterator[Metric]:
        auc = _by_version(n.ONLINE_AUC, "ROC-AUC of joined predictions in the window")
        lower = _by_version(n.ONLINE_AUC_LOWER, "95 % interval, lower end")
        upper = _by_version(n.ONLINE_AUC_UPPER, "95 % interval, upper end")
        samples = _by_version(n.ONLINE_AUC_SAMPLES, "Joined pairs in the window")
        positives = _by_version(n.ONLINE_AUC_POSITIVES, "Clicked pairs in the window")
        for version, e in self.job.estimates.items():
            samples.add_metric([version], e.samples)
            positives.add_metric([version], e.positives)
            if e.auc is not None and e.lower is not None and e.upper is not None:
                auc.add_metric([version], e.auc)
                lower.add_metric([version], e.lower)
                upper.add_metric([version], e.upper)
        recent = _by_version(
            n.ONLINE_AUC_RECENT, f"ROC-AUC of joined predictions of the last {self.job.recent_window_s:g} s"
        )
        recent_samples = _by_version(
            n.ONLINE_AUC_RECENT_SAMPLES, f"Joined pairs of the last {self.job.recent_window_s:g} s"
        )
        loko_min = _by_version(
            n.ONLINE_AUC_RECENT_LOKO_MIN,
            f"Lowest ROC-AUC of the last {self.job.recent_window_s:g} s with one API key's pairs left out",
        )
        loko_max = _by_version(
            n.ONLINE_AUC_RECENT_LOKO_MAX,
            f"Highest ROC-AUC of the last {self.job.recent_window_s:g} s with one API key's pairs left out",
        )
        for version, e in self.job.recent.items():
            recent_samples.add_metric([version], e.samples)
            if e.auc is not None:
                recent.add_metric([version], e.auc)
            if e.loko_min is not None and e.loko_max is not None:
                loko_min.add_metric([version], e.loko_min)
                loko_max.add_metric([version], e.loko_max)
        events = CounterMetricFamily(
            n.ONLINE_AUC_EVENTS_TOTAL.removesuffix("_total"),
            "Stream entries by outcome",
            labels=["stream", "outcome"],
        )
        for (stream, outcome), count in sorted(self.job.joiner.counts.items()):
            events.add_metric([stream, outcome], count)
        excluded = GaugeMetricFamily(
            n.ONLINE_AUC_EXCLUDED_PAIRS,
            "Pairs in the window left out of its estimate, by reason",
            labels=["model_version", "window", "reason"],
        )
        for window, table in (("long", self.job.estimates), ("recent", self.job.recent)):
            for version, e in table.items():
                excluded.add_metric([version, window, "key_share"], e.excluded)
        dropped = CounterMetricFamily(
            n.ONLINE_AUC_DROPPED_PAIRS_TOTAL.removesuffix("_total"),
            "Joined pairs dropped for good, by reason",
            labels=["reason"],
        )
        for reason in ("capacity",):
            dropped.add_metric([reason], self.job.dropped[reason])
        last = GaugeMetricFamily(n.ONLINE_AUC_LAST_EVENT_TIME, "Unix time of the newest prediction read")
        last.add_metric([], self.job.last_event_time)
        yield from (
            auc,
            lower,
            upper,
            samples,
            positives,
            recent,
            recent_samples,
            loko_min,
            loko_max,
            events,
            excluded,
            dropped,
            last,
        )


def main(argv: list[str] | None = None) -> int:
    s = get_settings()
    parser = argparse.ArgumentParser(prog="forkcast-online-auc", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--redis-url",
        default=s.events_url,
        help="the events Redis holding both streams (FORKCAST_EVENTS_REDIS_URL, else REDIS_URL)",
    )
    parser.add_argument(
        "--port", type=int, default=s.metrics_port, help="port of /metrics, /healthz, /readyz"
    )
    parser.add_argument("--host", default=s.metrics_host, help="address that port binds to")
    parser.add_argument("--window-s", type=float, default=s.auc_window_s, help="event-time window of the AUC")
    parser.add_argument(
        "--recent-window-s",
        type=float,
        default=n.ONLINE_AUC_RECENT_WINDOW_S,
        help=f"the short window of {n.ONLINE_AUC_RECENT}, which the canary analysis compares versions on",
    )
    parser.add_argument(
        "--attribution-s", type=float, default=s.auc_attribution_s, help="latest click joined"
    )
    parser.add_argument(
        "--min-samples", type=int, default=s.auc_min_samples, help="no AUC below this many pairs"
    )
    parser.add_argument(
        "--max-key-share",
        type=float,
        default=s.auc_max_key_share,
        help="most of a window's pairs one API key may hold (FORKCAST_AUC_MAX_KEY_SHARE; 1: no cap)",
    )
    parser.add_argument(
        "--compute-every-s", type=float, default=s.auc_compute_every_s, help="AUC refresh period"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=s.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = s.model_copy(
        update={
            "auc_window_s": args.window_s,
            "auc_attribution_s": args.attribution_s,
            "auc_min_samples": args.min_samples,
            "auc_compute_every_s": args.compute_every_s,
            "auc_max_key_share": args.max_key_share,
            "events_redis_url": args.redis_url,
        }
    )
    if not 0 < settings.auc_max_key_share <= 1:
        parser.error(f"--max-key-share must be in (0, 1], not {settings.auc_max_key_share}")
    job = OnlineAuc(redis.Redis.from_url(args.redis_url), settings, recent_window_s=args.recent_window_s)
    registry = CollectorRegistry()
    registry.register(AucCollector(job))
    # /readyz: Redis answers (the job waits out an outage in its loop; the probe makes the outage visible).
    start_probe_server(args.host, args.port, registry, redis_ready(args.redis_url))
    log.info(
        "online AUC of the streams in %s, /metrics /healthz /readyz on %s:%d",
        redacted_url(args.redis_url),
        args.host,
        args.port,
    )
    job.run()
    return 0
