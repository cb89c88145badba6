"""What the gate decides against, without torch: its thresholds and whether an alert asked for the run.

Split from gate.py so that the CLI's argument defaults, the release commands that do not score a model (promote)
and the drill read them without importing torch (3.3 s of every `forkcast-retrain` start on this VM).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# Written first by every pipeline (CI's .records-trigger, the drill): why this retraining ran. Keys: the pipeline's
# CI_PIPELINE_SOURCE and CI_PIPELINE_URL, and the spec:inputs `alert_name` and `alert_reason` of .gitlab-ci.yml.
TRIGGER_FILE = "trigger.json"
ALERT_NAME_KEY = "alert_name"
ALERT_REASON_KEY = "alert_reason"
NO_ALERT = "none"  # alert_name's default in .gitlab-ci.yml: a scheduled run, which no alert asked for


def triggering_alert(run_dir: Path) -> str | None:
    """The alert a triggered pipeline names (CI_PIPELINE_SOURCE=trigger and an ``alert_name`` input), else None.

    An unreadable or malformed record counts as no alert, and so does ``none``: drift then fails the gate, the
    safe side.
    """
    try:
        record = json.loads((run_dir / TRIGGER_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("CI_PIPELINE_SOURCE") != "trigger":
        return None
    alert = record.get(ALERT_NAME_KEY)
    return alert if isinstance(alert, str) and alert.strip() and alert != NO_ALERT else None


@dataclass(frozen=True)
class GateThresholds:
    auc_floor: float = 0.65
    auc_epsilon: float = 0.005
    logloss_margin: float = 0.01
    probe_min_std: float = 1e-3  # logit spread below this on 512 varied rows means a constant (dead) model
    psi_max: float = 0.25  # the usual "significant shift" level of the population stability index
    label_rate_shift_max: float = 0.05
    allow_drift: bool = False
    allow_drift_reason: str = "--allow-drift"  # said in the report next to an allowed drift
    # The original assignment's bar (SPEC §3: "accuracy ≥ 0.7"), on the held-out rows at threshold 0.5.
    accuracy_floor: float = 0.7
    # ε is measured against the best of the last N champions too, not only the current one: with the current one
    # alone each release may lose ε to the one before, so the AUC could slide by ε per release for ever; against
    # the best of N it can lose at most ε over any N releases.
    recent_champions: int = 5
