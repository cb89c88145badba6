"""Which run records make the gate expect drift: only a pipeline an alert triggered, naming the alert."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from forkcast_retrain.gate_policy import TRIGGER_FILE, triggering_alert


@pytest.mark.parametrize(
    ("record", "alert"),
    [
        (
            {"CI_PIPELINE_SOURCE": "trigger", "alert_name": "OnlineAucLow", "alert_reason": "AUC 0.61"},
            "OnlineAucLow",
        ),
        ({"CI_PIPELINE_SOURCE": "schedule", "alert_name": "none"}, None),
        # A trigger that names no alert (the input's default) is no alert either.
        ({"CI_PIPELINE_SOURCE": "trigger", "alert_name": "none"}, None),
        (
            {"CI_PIPELINE_SOURCE": "push", "alert_name": "OnlineAucLow"},
            None,
        ),  # not a trigger: the name is noise
        # The variables of the old interface are not the record's keys: a caller-set ALERT_NAME counts for nothing.
        ({"CI_PIPELINE_SOURCE": "trigger", "ALERT_NAME": "OnlineAucLow"}, None),
        ({"CI_PIPELINE_SOURCE": "trigger", "alert_name": "  "}, None),
        ({"CI_PIPELINE_SOURCE": "trigger", "alert_name": 3}, None),
        (["trigger"], None),
        ("not json {", None),
    ],
)
def test_only_a_triggered_run_naming_its_alert_counts(
    tmp_path: Path, record: object, alert: str | None
) -> None:
    (tmp_path / TRIGGER_FILE).write_text(record if isinstance(record, str) else json.dumps(record))
    assert triggering_alert(tmp_path) == alert


def test_no_record_is_no_alert(tmp_path: Path) -> None:
    assert triggering_alert(tmp_path) is None
