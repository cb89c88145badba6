"""``promtool test rules`` of one alert over given series: the unit test of an alerting rule, in one place.

The delivery tests hold each alert the manifests ship to its cause (fires on it, stays quiet on its twin) with
promtool's own rule evaluation rather than a re-implementation of PromQL. The files are written as JSON, which is
YAML, so this module needs nothing beyond the standard library (as the rest of forkcast_devservers).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from forkcast_devservers.binaries import PROMTOOL, locate


def alert_rule_test(
    workdir: Path,
    rules: Sequence[Mapping[str, Any]],
    series: Mapping[str, str] | Sequence[tuple[str, str]],
    alert: str,
    eval_time: str,
    expected: Sequence[Mapping[str, Any]],
) -> subprocess.CompletedProcess[str]:
    """Run promtool on ``rules`` (one group) with ``series`` (``name{labels}`` → values in promtool's expanding
    notation, one step per minute) and expect ``alert`` at ``eval_time`` to fire exactly as ``expected`` (promtool's
    ``exp_alerts``: [] for "quiet"). Returns the finished process: returncode 0 when promtool agrees, else its output
    says where it did not."""
    pairs = series.items() if isinstance(series, Mapping) else series
    (workdir / "rules.yml").write_text(json.dumps({"groups": [{"name": "under-test", "rules": list(rules)}]}))
    test = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in pairs],
                "alert_rule_test": [
                    {"eval_time": eval_time, "alertname": alert, "exp_alerts": list(expected)}
                ],
            }
        ],
    }
    (workdir / "test.yml").write_text(json.dumps(test))
    return subprocess.run(
        [locate(PROMTOOL), "test", "rules", "test.yml"],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
