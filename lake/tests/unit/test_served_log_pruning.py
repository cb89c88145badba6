"""The served-log reader prunes on the arrival-day partition but decides the window on ``ts``.

``date`` is the day an event arrived in Redis (served_log), which is not always the day of its own ``ts``: a
prediction stamped 23:59:59.9 that reaches Redis after midnight sits in the next day's partition. Before the reader
widened its pruning range by MAX_CLOCK_SKEW_S it dropped such rows from a window that ends before midnight.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from forkcast_lake.pit_source import ServedLog
from forkcast_lake.pit_testing import LogWriter

MIDNIGHT = datetime(2026, 12, 5, tzinfo=UTC).timestamp()


def test_an_event_stamped_before_midnight_that_arrived_after_it_is_in_the_window(tmp_path: Path) -> None:
    log = LogWriter()
    log.prediction("r-same", MIDNIGHT - 5.0, user=2, scores={8: 0.4})
    log.prediction("r-late", MIDNIGHT - 0.1, user=1, scores={7: 0.5}, arrival=MIDNIGHT + 0.2)
    log.feedback("r-late", 7, True, MIDNIGHT - 0.05, arrival=MIDNIGHT + 0.3)
    log.commit(str(tmp_path))

    served = ServedLog(str(tmp_path))
    rids = served.predictions(MIDNIGHT - 60, MIDNIGHT - 0.01).collect()["rid"].to_list()
    assert sorted(rids) == ["r-late", "r-same"]
    clicks = served.feedback(MIDNIGHT - 60, MIDNIGHT - 0.01, attribution_s=0).collect()["rid"].to_list()
    assert clicks == ["r-late"]
