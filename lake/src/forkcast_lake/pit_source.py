"""Reading the served-log tables for a time window, in the form the point-in-time joins work on.

The tables and their columns are :mod:`forkcast_lake.served_log`'s. Reads are lazy (``pl.scan_delta``) and prune
on the ``date`` partition first, so a window reads only its days' files. ``date`` is the day an event *arrived* in
Redis (its stream id's milliseconds, served_log), not its own ``ts``: producers' clocks differ by up to
MAX_CLOCK_SKEW_S, so the pruning range is widened by that much on both sides and the window itself is decided on
``ts``, as the online-AUC job decides it. What this adds:

* the stream order of every event, from its Redis entry id ``<ms>-<seq>`` as two integers (``*_ORDER`` columns);
  the online-AUC job sees events in that order, and which of two events on one pair counts depends on it;
* predictions one row per served restaurant (``restaurant_id``, ``score``), events the online-AUC job would refuse
  as malformed left out (the same restaurant twice in one response: ``forkcast_monitoring.events.parse_prediction``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import polars as pl
from deltalake import DeltaTable

from forkcast_contract.streams import ATTRIBUTION_WINDOW_S, MAX_CLOCK_SKEW_S
from forkcast_lake.served_log import SERVED_TABLES
from forkcast_lake.storage import options_for, table_uri

PREDICTION_ORDER: Final = "prediction_order"
FEEDBACK_ORDER: Final = "feedback_order"
UPDATE_ORDER: Final = "update_order"

PREDICTIONS_TABLE, FEEDBACK_TABLE, FEATURE_UPDATES_TABLE = (t.table for t in SERVED_TABLES)

# A stream entry id is ``<ms>-<seq>``; ms * 2**22 + seq orders ids exactly while seq < 2**22 (4 M entries in one
# millisecond, far above what one Redis accepts) and ms < 2**41 (the year 2039): the check in ``stream_order``.
_SEQ_BITS: Final = 22


def stream_order(column: str = "stream_id") -> pl.Expr:
    """The Redis entry id as one int64 that sorts as the stream does."""
    parts = pl.col(column).str.split_exact("-", 1)
    ms = parts.struct.field("field_0").cast(pl.Int64)
    seq = parts.struct.field("field_1").cast(pl.Int64)
    return pl.when((seq < 2**_SEQ_BITS) & (ms < 2**41)).then(ms * 2**_SEQ_BITS + seq).otherwise(None)


def parse_time(text: str) -> float:
    """A window bound on the command line: Unix seconds, or an ISO-8601 time with a zone."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither Unix seconds nor an ISO-8601 time") from None
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone (add Z or +00:00)")
    return when.timestamp()


def day(ts: float) -> str:
    """The ``date`` partition value of a Unix time (served_log: the UTC day, ``YYYY-MM-DD``)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


@dataclass(frozen=True)
class ServedLog:
    """Where the served-log tables live: the lake prefix (``s3://bucket/prefix`` or a local directory)."""

    base: str

    def table(self, table: str) -> pl.LazyFrame:
        """The whole table, lazily; a table the compaction has not created yet (no event of its stream so far)
        reads as empty, with its schema."""
        uri = table_uri(self.base, table)
        if not DeltaTable.is_deltatable(uri, storage_options=options_for(uri)):
            schema = next(t.schema for t in SERVED_TABLES if t.table == table)
            frame = pl.from_arrow(schema.empty_table())
            assert isinstance(frame, pl.DataFrame)
            return frame.lazy()
        return pl.scan_delta(uri, storage_options=options_for(uri))

    def scan(self, table: str, since: float, until: float) -> pl.LazyFrame:
        """Rows of ``table`` with ``since <= ts < until``, reading only the partitions of those days."""
        return self.table(table).filter(
            pl.col("date").is_between(
                pl.lit(day(since - MAX_CLOCK_SKEW_S)), pl.lit(day(until + MAX_CLOCK_SKEW_S))
            )
            & (pl.col("ts") >= since)
            & (pl.col("ts") < until)
        )

    def predictions(self, since: float, until: float) -> pl.LazyFrame:
        """One row per served (request, restaurant) of the predictions stamped in [since, until)."""
        events = self.scan(PREDICTIONS_TABLE, since, until).with_columns(
            stream_order().alias(PREDICTION_ORDER)
        )
        wellformed = pl.col("restaurant_ids").list.n_unique() == pl.col("restaurant_ids").list.len()
        return (
            events.filter(wellformed)
            .explode(["restaurant_ids", "scores"])
            .rename({"restaurant_ids": "restaurant_id", "scores": "score"})
            .drop("date", "stream_id")
        )

    def feedback(
        self, since: float, until: float, attribution_s: float = ATTRIBUTION_WINDOW_S
    ) -> pl.LazyFrame:
        """Feedback that can label a prediction stamped in [since, until).

        The join takes feedback up to the attribution window after its prediction, and feedback stamped before its
        prediction too (it may arrive first); the latter is read back to MAX_CLOCK_SKEW_S before ``since``, the
        clock difference the platform tolerates between producers.
        """
        frame = self.scan(FEEDBACK_TABLE, since - MAX_CLOCK_SKEW_S, until + attribution_s)
        return frame.with_columns(stream_order().alias(FEEDBACK_ORDER)).drop("date", "stream_id")

    def feature_updates(self, until: float) -> pl.LazyFrame:
        """Every live feature update stamped before ``until`` (a prediction's values may come from any of them)."""
        return (
            self.table(FEATURE_UPDATES_TABLE)
            .filter((pl.col("date") <= day(until + MAX_CLOCK_SKEW_S)) & (pl.col("ts") < until))
            .with_columns(stream_order().alias(UPDATE_ORDER))
            .drop("date", "stream_id")
        )
