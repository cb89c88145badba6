"""What the gate decides against, without torch: its thresholds and whether an alert asked for the run.

Split from gate.py so that the CLI's argument defaults, the release commands that do not score a model (promote)
and the drill read them without importing torch (3.3 s of every `forkcast-retrain` start on this VM).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# Written first by every pipeline (CI's .records-trigger, the drill): why this retraining ran.
TRIGGER_FILE = "trigger.json"


def triggering_alert(run_dir: Path) -> str | None:
    """The alert a triggered pipeline names (CI_PIPELINE_SOURCE=trigger and ALERT_NAME), else None.

    An unreadable or malformed record counts as no alert: drift then fails the gate, the safe side.
    """
    try:
        record = json.loads((run_dir / TRIGGER_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("CI_PIPELINE_SOURCE") != "trigger":
        return None
    alert = record.get("ALERT_NAME")
    return alert if isinstance(alert, str) and alert.strip() else None


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
