"""The event streams' bounds: dedup markers live exactly as long as the online-AUC join can use them."""

from __future__ import annotations

from forkcast_contract import streams


def test_dedup_markers_outlive_the_attribution_window_and_no_more() -> None:
    """Issue 18.2: the markers lived 7 days (604,800 s), ≈ 1,000x the 630 s in which the join counts a click."""
    assert streams.FEEDBACK_DEDUP_TTL_S == streams.ATTRIBUTION_WINDOW_S + streams.MAX_CLOCK_SKEW_S
    assert streams.FEEDBACK_DEDUP_TTL_S < 3600


def test_both_event_layouts_carry_the_key_id() -> None:
    assert streams.PREDICTION_FIELDS[-1] == "key_id"
    assert streams.FEEDBACK_FIELDS == ("rid", "restaurant", "clicked", "ts", "key_id")
