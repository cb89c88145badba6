"""Whether the served log can label a window yet, and still holds it: checked before a training table is built.

A served pair without feedback in the lake becomes a negative. That is only true once every click that could label
it has been compacted: a click counts up to the attribution window after its prediction, and producers' clocks may
differ by MAX_CLOCK_SKEW_S (forkcast_contract.streams), so labelling predictions stamped before ``until`` needs the
feedback stream compacted up to ``until + attribution + skew``. How far it is compacted is the feedback table's
committed position: the ``txn`` version the compaction commits with each batch (appId ``app_id(stream)``, version
the batch's last stream entry id packed by :mod:`forkcast_lake.stream_ids`), whose millisecond part is the Redis
server's arrival time of the last entry in the table. Before that time has passed, the missing clicks would be
written as negatives; the check refuses unless the caller accepts an incomplete table.

The other end: ``forkcast-lake maintain`` drops the predictions and feedback of days before its retention cutoff
(forkcast_lake.retention), so a window starting before it would silently lack those days.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from deltalake import DeltaTable

from forkcast_contract.streams import FEEDBACK_STREAM, MAX_CLOCK_SKEW_S
from forkcast_lake.compact import app_id
from forkcast_lake.datasets import LakeDataError
from forkcast_lake.pit_source import FEEDBACK_TABLE
from forkcast_lake.retention import retention_cutoff
from forkcast_lake.storage import options_for, table_uri
from forkcast_lake.stream_ids import StreamId


class IncompleteWindowError(LakeDataError):
    """The window's labels or predictions are not all in the lake (the message says what is missing)."""


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Committed:
    """The feedback table's committed position: the last compacted stream entry and its arrival time."""

    entry: StreamId

    @property
    def time(self) -> float:
        return self.entry.ms / 1000


def feedback_committed(lake: str) -> Committed | None:
    """The feedback table's committed position, or None when no compaction batch was ever committed to it."""
    uri = table_uri(lake, FEEDBACK_TABLE)
    if not DeltaTable.is_deltatable(uri, storage_options=options_for(uri)):
        return None
    version = DeltaTable(uri, storage_options=options_for(uri)).transaction_version(app_id(FEEDBACK_STREAM))
    return None if version is None else Committed(StreamId.from_version(version))


def check_labels_complete(lake: str, until: float, attribution_s: float) -> None:
    """Refuse when feedback that could label a prediction stamped before ``until`` may not be compacted yet."""
    needed = until + attribution_s + MAX_CLOCK_SKEW_S
    committed = feedback_committed(lake)
    if committed is not None and committed.time >= needed:
        return
    where = (
        "has no committed position (no compaction batch of the feedback stream in it)"
        if committed is None
        else f"is committed up to {_iso(committed.time)} (stream entry {committed.entry})"
    )
    raise IncompleteWindowError(
        f"the served log's feedback table {where}; labelling predictions before {_iso(until)} needs it committed "
        f"up to {_iso(needed)} (until + attribution {attribution_s:g} s + clock skew {MAX_CLOCK_SKEW_S} s): "
        "clicks not yet compacted would become negatives. Wait for the compaction, or pass --allow-incomplete"
    )


def check_retained(since: float, keep_days: int, now: datetime | None = None) -> None:
    """Refuse a window that starts before the days ``forkcast-lake maintain`` keeps (FORKCAST_LAKE_KEEP_DAYS)."""
    cutoff = retention_cutoff(keep_days, now)
    if datetime.fromtimestamp(since, UTC).date().isoformat() < cutoff:
        raise IncompleteWindowError(
            f"--since {_iso(since)} is before the retention cutoff {cutoff} (FORKCAST_LAKE_KEEP_DAYS={keep_days}): "
            "`forkcast-lake maintain` drops the predictions and feedback of earlier days, so the table would lack "
            f"them; start at {cutoff}T00:00:00Z or later"
        )
