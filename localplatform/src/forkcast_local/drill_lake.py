"""The end-to-end drill's side of the lake: the served log as training data, and the online AUC checked against it.

Three things the drill needs from the platform's lake (forkcast_lake, lake/README.md), each through the interface a
cluster has:

* **Committed?** The served-log compaction (the ``lake-compact`` workload of the render) holds its position in each
  table as a Delta ``txn`` action (appId ``forkcast-lake-compact/<stream>``, version = the last committed stream
  entry id packed by ``forkcast_lake.stream_ids``). Every event of a stream up to entry E is in its table once that
  version reaches E: ``Lake.wait_committed`` compares it with the stream's ``last-generated-id`` (XINFO STREAM).
* **The job's figures.** The online-AUC job's estimate per version is on its own /metrics (prometheus_client writes
  a float with ``repr``, every bit of it), read there rather than through Prometheus' scrape.
* **The lake's figures and the training table.** ``forkcast-lake online-auc`` and ``forkcast-lake training-table``,
  run as the CLIs with the platform's S3 settings, as a CI job or an operator runs them.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from deltalake import DeltaTable
from prometheus_client.parser import text_string_to_metric_families

from forkcast_contract import metric_names as n
from forkcast_contract.dataset import read_manifest
from forkcast_contract.streams import PREDICTIONS_STREAM
from forkcast_lake.compact import app_id
from forkcast_lake.served_log import SERVED_TABLES
from forkcast_lake.storage import storage_options, table_uri
from forkcast_lake.stream_ids import ZERO, StreamId
from forkcast_local.timeline import DrillError
from forkcast_registry.settings import RegistrySettings

# The table each stream is compacted into (forkcast_lake.served_log).
TABLE_OF = {t.stream: t.table for t in SERVED_TABLES}


@dataclass(frozen=True)
class AucFigures:
    """One version's online AUC over a window and the counts behind it (the job's ``Estimate``, the lake's
    ``LakeAuc``)."""

    auc: float | None
    samples: int
    positives: int
    excluded: int


def job_figures(metrics_url: str, version: str) -> AucFigures | None:
    """The online-AUC job's long-window estimate of ``version`` as its /metrics shows it now (None: no window)."""
    with urllib.request.urlopen(f"{metrics_url}/metrics", timeout=10) as r:
        text = r.read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("model_version") != version:
                continue
            if s.name == n.ONLINE_AUC_EXCLUDED_PAIRS and s.labels.get("window") != "long":
                continue
            values[s.name] = s.value
    if n.ONLINE_AUC_SAMPLES not in values:
        return None
    return AucFigures(
        values.get(n.ONLINE_AUC),
        int(values[n.ONLINE_AUC_SAMPLES]),
        int(values.get(n.ONLINE_AUC_POSITIVES, 0)),
        int(values.get(n.ONLINE_AUC_EXCLUDED_PAIRS, 0)),
    )


class Lake:
    """The platform's lake as the drill reads it: ``env`` holds S3 and ``FORKCAST_LAKE_URI`` (the CLIs' env),
    ``events_url`` the events Redis with the rights of user ``online-auc`` (XINFO STREAM/GROUPS on both streams)."""

    def __init__(self, env: dict[str, str], events_url: str, bin_dir: Path) -> None:
        self.env, self.bin_dir = env, bin_dir
        self.uri = env["FORKCAST_LAKE_URI"]
        self.redis = redis.Redis.from_url(events_url, decode_responses=True)
        settings = RegistrySettings.model_validate(
            {
                k: env[k]
                for k in ("S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")
            }
        )
        self.options = storage_options(settings)

    def close(self) -> None:
        self.redis.close()

    # -- the streams and the compaction ------------------------------------------------------------------------
    def last_id(self, stream: str) -> StreamId:
        """The id of the newest entry ever added to ``stream`` (trims do not lower it)."""
        return StreamId.parse(self.redis.xinfo_stream(stream)["last-generated-id"])

    def read_all(self, stream: str, group: str, last: StreamId | None = None) -> bool:
        """Whether ``group`` has been handed every entry of ``stream`` up to ``last`` (default: all it holds now;
        pending ones count as read)."""
        last = self.last_id(stream) if last is None else last
        for g in self.redis.xinfo_groups(stream):
            if g["name"] == group:
                return StreamId.parse(g["last-delivered-id"]) >= last
        raise DrillError(f"no consumer group {group} on {stream}")

    def committed(self, stream: str) -> StreamId:
        """The compaction's committed position in ``stream``'s table (the Delta txn version of its appId)."""
        uri = table_uri(self.uri, TABLE_OF[stream])
        if not DeltaTable.is_deltatable(uri, storage_options=self.options):
            return ZERO
        version = DeltaTable(uri, storage_options=self.options).transaction_version(app_id(stream))
        return ZERO if version is None else StreamId.from_version(version)

    def wait_committed(self, streams: tuple[str, ...], timeout_s: float) -> dict[str, str]:
        """Wait until the compaction has committed every entry the ``streams`` hold now; their last ids."""
        targets = {s: self.last_id(s) for s in streams}
        deadline = time.monotonic() + timeout_s
        while True:
            behind = {
                s: (str(self.committed(s)), str(t)) for s, t in targets.items() if self.committed(s) < t
            }
            if not behind:
                return {s: str(t) for s, t in targets.items()}
            if time.monotonic() > deadline:
                raise DrillError(f"the lake compaction has not committed within {timeout_s:g} s: {behind}")
            time.sleep(0.5)

    def wait_clicked(self, group: str, target: StreamId, timeout_s: float) -> None:
        """Wait until the click simulator (consumer group ``group``) has answered every prediction event up to
        ``target``: read it, written its feedback and acknowledged it (it acknowledges after the feedback)."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.read_all(PREDICTIONS_STREAM, group, target):
                pending = self.redis.xpending(PREDICTIONS_STREAM, group)
                if not pending["pending"] or StreamId.parse(pending["min"]) > target:
                    return
            if time.monotonic() > deadline:
                raise DrillError(
                    f"the click simulator has not answered every prediction within {timeout_s:g} s"
                )
            time.sleep(0.1)

    # -- the CLIs --------------------------------------------------------------------------------------------
    def _cli(self, *argv: str) -> str:
        proc = subprocess.run(
            [str(self.bin_dir / "forkcast-lake"), *argv],
            capture_output=True,
            text=True,
            env={**os.environ, **self.env},
        )
        if proc.returncode != 0:
            raise DrillError(f"forkcast-lake {argv[0]} failed: {proc.stderr[-2000:]}")
        return proc.stdout

    def training_table(
        self, since: float, until: float, features_from: Path, out: Path, attribution_s: float
    ) -> dict[str, Any]:
        """``forkcast-lake training-table`` of [since, until) into the new directory ``out``; what it printed."""
        printed = self._cli(
            "training-table",
            "--since",
            repr(since),
            "--until",
            repr(until),
            "--features-from",
            str(features_from),
            "--attribution-s",
            f"{attribution_s:g}",
            "--out",
            str(out),
            # The lake's own completeness rule waits until + attribution + clock skew (90 s here) for clicks that
            # might still come. The drill knows the producer: the simulator answers each served prediction once,
            # at once, and the caller has waited for it (wait_clicked) and for the compaction (wait_committed), so
            # no click of the window is still to come.
            "--allow-incomplete",
        )
        meta = read_manifest(out)
        rows = {
            split: sum(f.rows for f in meta.files if f.path.startswith(f"{split}/"))
            for split in ("train", "test")
        }
        return {
            "since": since,
            "until": until,
            "out": str(out),
            "preset": meta.preset,
            "fingerprint": meta.fingerprint,
            "rows": rows,
            "click_rate": meta.click_rate,
            "printed": printed.strip().splitlines(),
        }

    def online_auc(
        self, version: str, since: float, until: float, job: dict[str, str]
    ) -> tuple[AucFigures, dict[str, Any]]:
        """``forkcast-lake online-auc`` of ``version`` over [since, until), with the job's settings ``job``."""
        line = self._cli(
            "online-auc",
            "--model-version",
            version,
            "--since",
            repr(since),
            "--until",
            repr(until),
            "--max-key-share",
            job["max_key_share"],
            "--attribution-s",
            job["attribution_s"],
            "--min-samples",
            job["min_samples"],
            "--min-per-class",
            job["min_per_class"],
        )
        out: dict[str, Any] = json.loads(line)
        return AucFigures(out["auc"], out["samples"], out["positives"], out["excluded"]), out
