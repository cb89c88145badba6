"""The dependency audit's handling of pip-audit's results (scripts/audit_deps.py), offline: the audit itself needs
the network and runs as `make audit`, not here.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "audit_deps.py"


@pytest.fixture(scope="module")
def audit() -> ModuleType:
    spec = importlib.util.spec_from_file_location("audit_deps", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["audit_deps"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def report(*deps: dict[str, object]) -> str:
    return json.dumps({"dependencies": list(deps), "fixes": []})


def test_vulnerabilities_fail_and_are_listed(audit: ModuleType) -> None:
    text = report(
        {"name": "requests", "version": "2.19.0", "vulns": [
            {"id": "PYSEC-2018-28", "fix_versions": ["2.20.0"], "aliases": ["CVE-2018-18074"]},
        ]},
        {"name": "idna", "version": "3.10", "vulns": []},
    )  # fmt: skip
    outcome = audit.judge(1, text, "")
    assert outcome.status == 1
    assert "requests==2.19.0: PYSEC-2018-28 (CVE-2018-18074); fixed in 2.20.0" in "\n".join(outcome.lines)


def test_clean_report_passes(audit: ModuleType) -> None:
    outcome = audit.judge(0, report({"name": "idna", "version": "3.10", "vulns": []}), "")
    assert outcome.status == 0
    assert outcome.lines == ("no known vulnerabilities in 1 locked packages",)


def test_nothing_audited_is_a_skip_not_a_pass(audit: ModuleType) -> None:
    text = report({"name": "idna", "skip_reason": "Dependency not found on PyPI and could not be audited"})
    outcome = audit.judge(0, text, "")
    assert outcome.status == 0
    assert outcome.lines[0].startswith("audit skipped: ")


def test_unreachable_service_skips(audit: ModuleType) -> None:
    stderr = (
        "Traceback (most recent call last):\n  ...\nrequests.exceptions.ConnectionError: "
        "HTTPSConnectionPool(host='vulns.example', port=443): Max retries exceeded with url: /v1/query\n"
    )
    outcome = audit.judge(1, None, stderr)
    assert outcome.status == 0
    assert outcome.lines[0].startswith("audit skipped: vulnerability service unreachable: ")
    assert "Max retries exceeded" in outcome.lines[0]


def test_other_failures_are_errors(audit: ModuleType) -> None:
    outcome = audit.judge(1, None, "pip-audit: error: unrecognized arguments: --bogus\n")
    assert outcome.status == 2
    assert "--bogus" in outcome.lines[-1]


def test_help_explains_every_option(audit: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        audit.main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for option in ("--uv", "--pip-audit", "--service", "--timeout"):
        assert option in out
