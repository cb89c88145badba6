"""Test support for the online-AUC job, importable as a module (extra ``testing``) so that no test folder puts
itself on ``sys.path``: the producers' encodings, draining the job, an independent AUC, the per-key share rule
written out plainly, and a labelled sample of a /metrics text. Nothing in the jobs imports it."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import numpy as np
import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from forkcast_contract.streams import PREDICTIONS_STREAM
from forkcast_devservers.servers import RedisServer
from forkcast_monitoring.online_auc import AucCollector, OnlineAuc

NOW = 1_800_000_000.0


class Encoded(Protocol):
    """A prediction event as the inference service writes it (``forkcast_inference.events.Event``)."""

    def fields(self) -> Mapping[str, str]: ...


@contextmanager
def fresh_redis() -> Iterator[redis.Redis]:
    """A client of an empty redis-server of its own, stopped on exit (for module-scoped measurements)."""
    with tempfile.TemporaryDirectory() as work, RedisServer(Path(work)) as server:
        yield redis.Redis.from_url(server.url)


def write_predictions(
    client: redis.Redis, events: Sequence[Encoded], key_ids: list[str] | None = None
) -> None:
    """XADD the events in the inference service's encoding; ``key_ids``: the API key id of each (the field the
    gateway's X-Forkcast-Key-Id becomes), else the encoding's own."""
    pipe = client.pipeline(transaction=False)
    for i, e in enumerate(events):
        fields = e.fields() if key_ids is None else {**e.fields(), "key_id": key_ids[i]}
        pipe.xadd(PREDICTIONS_STREAM, dict(fields))  # type: ignore[arg-type]
    pipe.execute()


def drain(job: OnlineAuc) -> None:
    """Read every entry there is, then compute the estimates at the job's clock."""
    while job.step(block_ms=50):
        pass
    job.compute(job.clock())


def scrape(job: OnlineAuc) -> str:
    """The job's /metrics exposition as Prometheus would read it (its collector in a registry of its own)."""
    registry = CollectorRegistry()
    registry.register(AucCollector(job))
    return generate_latest(registry).decode()


def metric_sample(text: str, name: str, **labels: str) -> float:
    """A sample of a Prometheus text exposition (0 when the labelled series does not exist yet)."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                return float(found.value)
    return 0.0


def brute_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC-AUC over every (positive, negative) pair, ties counting one half: O(n²), no shared code."""
    pos, neg = scores[labels], scores[~labels]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def capped_offline(pairs: list[tuple[str, float, float, bool]], share: float) -> list[tuple[float, bool]]:
    """The per-key share rule of window.py written out plainly, for an offline recompute over (key, time, score,
    label) pairs: the largest per-key count c with min(max n_k, c) <= share * sum min(n_k, c); each key keeps its c
    newest pairs by (time, score, label). Returns the kept (score, label) pairs."""
    by_key: dict[str, list[tuple[float, float, bool]]] = {}
    for key, t, score, label in pairs:
        by_key.setdefault(key, []).append((t, score, label))
    counts = [len(v) for v in by_key.values()]
    top = max(counts)
    c = max(c for c in range(top + 1) if min(top, c) <= share * sum(min(n, c) for n in counts))
    kept = []
    for rows in by_key.values():
        rows.sort(reverse=True)
        kept += [(score, label) for _, score, label in rows[:c]]
    return kept
