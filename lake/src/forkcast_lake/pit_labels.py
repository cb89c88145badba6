"""Which served pairs carry which label: the online-AUC job's join rule, applied to the served-log tables at once.

The streaming job (forkcast_monitoring.join.Joiner) pairs a prediction with feedback event by event; the lake has
every event at hand, so the same rule is a handful of polars joins (no Python loop per row):

* a request counts once: of prediction events with one request id, the first in stream order (the job drops the
  later ones as ``duplicate``);
* a served pair is (request id, restaurant id) for each restaurant the response held;
* its label is the ``clicked`` of the FIRST feedback event, in stream order, that names the pair, comes from the
  prediction's API key (the gateway refuses feedback on another key's request; the job counts it ``key_mismatch``
  and leaves the pair open) and is stamped at most the attribution window after the prediction
  (``ATTRIBUTION_WINDOW_S`` from forkcast_contract.streams: a later one is ``late``, it also leaves the pair open);
  any later feedback on the pair is a ``duplicate`` and changes nothing.

What this cannot repeat, because it depends on when the job read an event rather than on the events: feedback or a
prediction stamped more than MAX_CLOCK_SKEW_S ahead of the job's clock (``future``), a prediction the job let go
before a valid click arrived (``expired``: only for feedback arriving over ATTRIBUTION_WINDOW_S + MAX_CLOCK_SKEW_S
after its prediction yet stamped inside the window), and pairs shed from a full window (over
``FORKCAST_AUC_MAX_SAMPLES``). Under an honest clock and a window below its capacity the pairs are the same.
"""

from __future__ import annotations

from typing import Final

import polars as pl

from forkcast_contract.streams import ATTRIBUTION_WINDOW_S
from forkcast_lake.pit_source import FEEDBACK_ORDER, PREDICTION_ORDER

# Columns of a served pair (``served_pairs``): the prediction's own columns plus the restaurant and its score.
PAIR_KEY: Final = ("rid", "restaurant_id")


def served_pairs(predictions: pl.LazyFrame) -> pl.LazyFrame:
    """One row per (request, restaurant) served: the prediction's columns, ``restaurant_id`` and its ``score``.

    ``predictions``: the served-log predictions in :mod:`forkcast_lake.pit_source`'s normal form (one row per
    served pair, ``PREDICTION_ORDER`` giving the stream order of the event it came from).
    """
    first_event = (
        predictions.group_by("rid")
        .agg(pl.col(PREDICTION_ORDER).min().alias("_first"))
        .rename({"rid": "_rid"})
    )
    return (
        predictions.join(first_event, left_on="rid", right_on="_rid", how="inner")
        .filter(pl.col(PREDICTION_ORDER) == pl.col("_first"))
        .drop("_first")
        .unique(subset=list(PAIR_KEY), keep="first", maintain_order=True)
    )


def first_valid_feedback(
    pairs: pl.LazyFrame, feedback: pl.LazyFrame, attribution_s: float = ATTRIBUTION_WINDOW_S
) -> pl.LazyFrame:
    """Per served pair with a label: ``rid``, ``restaurant_id``, ``clicked`` (bool) and ``feedback_ts``.

    The first feedback in stream order among those of the pair's key and inside the attribution window, exactly
    the one the streaming join would have joined (the module docstring).
    """
    candidates = feedback.select(
        *PAIR_KEY,
        pl.col("clicked").cast(pl.Boolean),
        pl.col("ts").alias("feedback_ts"),
        pl.col("key_id").alias("feedback_key_id"),
        FEEDBACK_ORDER,
    )
    return (
        pairs.select(*PAIR_KEY, "ts", "key_id")
        .join(candidates, on=list(PAIR_KEY), how="inner")
        # The job's test is ``feedback.time > prediction.time + attribution_s`` → late: the same float64 sum here.
        .filter(
            (pl.col("feedback_key_id") == pl.col("key_id"))
            & (pl.col("feedback_ts") <= pl.col("ts") + attribution_s)
        )
        .sort(FEEDBACK_ORDER)
        .unique(subset=list(PAIR_KEY), keep="first", maintain_order=True)
        .select(*PAIR_KEY, "clicked", "feedback_ts")
    )


def labelled_pairs(
    predictions: pl.LazyFrame, feedback: pl.LazyFrame, attribution_s: float = ATTRIBUTION_WINDOW_S
) -> pl.LazyFrame:
    """Every served pair with ``clicked`` (bool; null: no valid feedback) and ``feedback_ts``.

    The online AUC uses the pairs whose ``clicked`` is not null (a pair nobody labelled is not in its window); the
    training table takes a pair without a valid click as a negative (an impression that was not clicked in time).
    """
    pairs = served_pairs(predictions)
    return pairs.join(first_valid_feedback(pairs, feedback, attribution_s), on=list(PAIR_KEY), how="left")
