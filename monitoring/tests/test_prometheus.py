"""Config checks with the real promtool: config and rules valid, rule unit tests pass, and every metric a rule
reads is defined in the contract's metric-names module (or is Prometheus' own ``up``)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from forkcast_contract import metric_names

PROM = Path(__file__).parents[1] / "prometheus"
pytestmark = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool missing (Debian package prometheus)"
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], cwd=PROM, capture_output=True, text=True, timeout=60)


def test_config_and_rules_are_valid() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass() -> None:
    result = promtool(
        "test", "rules", *sorted(str(p.relative_to(PROM)) for p in (PROM / "tests").glob("*.yml"))
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_metric_a_rule_reads_is_defined_in_the_contract() -> None:
    defined = {v for k, v in vars(metric_names).items() if k.isupper() and isinstance(v, str)}
    exposed = set()
    for name in defined:  # what prometheus-client exposes for a counter, histogram or info of that name
        exposed |= {name, f"{name}_total", f"{name}_bucket", f"{name}_count", f"{name}_sum", f"{name}_info"}
    text = "\n".join(p.read_text() for p in (PROM / "rules").glob("*.yml"))
    used = set(re.findall(r"\b(forkcast_[a-z0-9_]+)", text))
    assert used, "no metric found in the rules"
    assert used <= exposed, f"rules read metrics nobody defines: {sorted(used - exposed)}"
