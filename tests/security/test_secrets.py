"""No secrets in the repository, services bound to loopback by default, no production start without API keys
(issue 11 §6).

The scan reads every file git tracks (binary files skipped) for credential shapes. The only literals it lets through
are the dummy local credentials of the test fixtures, each listed in ALLOWED with the reason it is harmless.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import ValidationError

from forkcast_gateway.settings import GatewaySettings
from forkcast_inference.settings import InferenceSettings
from forkcast_monitoring import drift_job, online_auc, receiver
from forkcast_monitoring.settings import MonitoringSettings

ROOT = Path(__file__).resolve().parents[2]

PATTERNS: dict[str, re.Pattern[str]] = {
    "private key": re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"),
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "AWS secret access key": re.compile(r"(?i)aws_secret_access_key\s*[:=]\s*['\"]?[A-Za-z0-9/+]{40}\b"),
    "GitLab token": re.compile(r"\bgl(?:pat|ptt|rt|dt)-[0-9A-Za-z_-]{20,}"),
    # A quoted literal, not an interpolation (`"$REDIS_PASSWORD"`, `"${{ secrets.X }}"`).
    "password literal": re.compile(r"(?i)password\s*[:=]\s*['\"](?![$%{])[^'\"]{8,}['\"]"),
    # A secret key assigned a quoted literal, also with a type annotation (`: str`) or as a keyword argument.
    "secret key literal": re.compile(
        r"(?i)\b(?:aws_)?secret(?:_access)?_key\s*(?::\s*[\w\[\]| ]+)?=\s*['\"](?![$%{])[^'\"]+['\"]"
    ),
}


@dataclass(frozen=True)
class Allowed:
    path: str
    text: str  # the exact matched text
    reason: str


# Empty since the test servers' S3 secret became random per server (forkcast_devservers.servers.Seaweed): no literal
# credential is left in the tree. An entry names the file, the exact matched text and why it is harmless.
ALLOWED: tuple[Allowed, ...] = ()


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    kind: str
    text: str


def scan_text(path: str, text: str) -> list[Finding]:
    return [
        Finding(path, number, kind, match.group(0))
        for number, line in enumerate(text.splitlines(), start=1)
        for kind, pattern in PATTERNS.items()
        for match in pattern.finditer(line)
    ]


def scan_files(root: Path, paths: Iterable[str]) -> list[Finding]:
    findings = []
    for rel in paths:
        file = root / rel
        if not file.is_file():  # deleted in the working tree, or a submodule
            continue
        data = file.read_bytes()
        if b"\0" in data:  # binary (PNG, …)
            continue
        findings += scan_text(rel, data.decode("utf-8", errors="replace"))
    return findings


def not_allowed(findings: Iterable[Finding], entries: Iterable[Allowed] = ALLOWED) -> list[Finding]:
    allowed = {(a.path, a.text) for a in entries}
    return [f for f in findings if (f.path, f.text) not in allowed]


def tracked_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60
    ).stdout
    return [p for p in out.decode().split("\0") if p]


def test_no_secrets_in_tracked_files() -> None:
    files = tracked_files()
    assert len(files) > 100, "git ls-files found almost nothing: is this the repository root?"
    leaks = not_allowed(scan_files(ROOT, files))
    assert not leaks, "possible secrets committed:\n" + "\n".join(
        f"  {f.path}:{f.line}: {f.kind}: {f.text}" for f in leaks
    )


def test_every_allow_list_entry_is_still_needed() -> None:
    """A stale entry would silently allow that text again if it came back elsewhere in the same file."""
    found = {(f.path, f.text) for f in scan_files(ROOT, tracked_files())}
    for entry in ALLOWED:
        assert entry.reason
        assert (entry.path, entry.text) in found, f"allow-list entry no longer matches anything: {entry}"


# The planted values are assembled at run time so that this file itself holds no match.
PLANTED = {
    "private key": "-----BEGIN " + "RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n",
    "AWS access key id": "AWS_ACCESS_KEY_ID=" + "AKIA" + "Z7Q4" * 4 + "\n",
    "AWS secret access key": "AWS_SECRET" + "_ACCESS_KEY=" + "wJalrXUtnFEMI/K7MDENG/" + "b" * 18 + "\n",
    "GitLab token": "token: " + "glpat" + "-" + "x1Y2z3" * 4 + "\n",
    "password literal": "db:\n  password: " + "'" + "hunter2hunter2" + "'\n",
    "secret key literal": "SECRET" + "_KEY = " + '"' + "s3cr3t-value" + '"\n',
}


@pytest.mark.parametrize("kind", sorted(PLANTED))
def test_scanner_catches_a_planted_secret(tmp_path: Path, kind: str) -> None:
    (tmp_path / "leak.txt").write_text("harmless line\n" + PLANTED[kind])
    leaks = not_allowed(scan_files(tmp_path, ["leak.txt"]))
    assert [f.kind for f in leaks] == [kind]
    assert leaks[0].line >= 2


def test_allow_list_is_per_file(tmp_path: Path) -> None:
    """An allowed dummy secret is allowed only where it is, not anywhere it is pasted."""
    text = "secret" + '_key: str = "dummy-local-secret"'  # split so that this file holds no match
    entry = Allowed("fixtures/settings.py", text, "a throwaway local credential")
    (tmp_path / "fixtures").mkdir()
    (tmp_path / "fixtures" / "settings.py").write_text(text + "\n")
    (tmp_path / "settings.py").write_text(text + "\n")
    assert not_allowed(scan_files(tmp_path, ["fixtures/settings.py"]), [entry]) == []
    assert [f.path for f in not_allowed(scan_files(tmp_path, ["settings.py"]), [entry])] == ["settings.py"]


def test_scanner_ignores_references_to_secrets(tmp_path: Path) -> None:
    text = (
        'aws_secret_access_key=settings.secret_access_key\npassword: "$REDIS_PASSWORD"\n'
        "secretKeyRef:\n  name: forkcast-redis\n"
    )
    (tmp_path / "ok.py").write_text(text)
    assert scan_files(tmp_path, ["ok.py"]) == []


# --- loopback by default ---------------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("FORKCAST_") or name == "REDIS_URL":
            monkeypatch.delenv(name)
    # The settings default to production (issue 18.6), which refuses development defaults; the loopback checks
    # below are about the local defaults, and the production tests pass their environment explicitly.
    monkeypatch.setenv("FORKCAST_ENVIRONMENT", "local")


@pytest.mark.usefixtures("clean_env")
def test_service_settings_bind_loopback_by_default() -> None:
    assert GatewaySettings().host == "127.0.0.1"
    assert InferenceSettings().host == "127.0.0.1"
    assert MonitoringSettings().metrics_host == "127.0.0.1"


class _ParsedError(Exception):
    def __init__(self, host: object) -> None:
        self.host = host


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    "module", [receiver, online_auc, drift_job], ids=lambda m: m.__name__.rsplit(".")[-1]
)
def test_monitoring_servers_bind_loopback_by_default(monkeypatch: pytest.MonkeyPatch, module: object) -> None:
    """Each monitoring CLI's `--host` default, read from its parser just before it would start serving."""

    def capture(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        raise _ParsedError(self.get_default("host"))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    with pytest.raises(_ParsedError) as parsed:
        module.main([])  # type: ignore[attr-defined]
    assert parsed.value.host == "127.0.0.1"


# --- the gateway refuses production without API keys ---------------------------------------------------------

PRODUCTION = {
    "environment": "production",
    "upstreams": "http://inference:8001",
    "REDIS_URL": "redis://:pw@redis:6379/0",
}


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize("environment", ["staging", "production"])
def test_gateway_refuses_to_start_without_api_keys_file(environment: str) -> None:
    with pytest.raises(ValidationError, match="FORKCAST_API_KEYS_FILE"):
        GatewaySettings(**{**PRODUCTION, "environment": environment})  # type: ignore[arg-type]


@pytest.mark.usefixtures("clean_env")
def test_gateway_refuses_disabled_auth_outside_local(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    with pytest.raises(ValidationError, match="FORKCAST_AUTH_DISABLED"):
        GatewaySettings(**PRODUCTION, api_keys_file=keys, auth_disabled=True)  # type: ignore[arg-type]


@pytest.mark.usefixtures("clean_env")
def test_gateway_starts_in_production_with_api_keys_file(tmp_path: Path) -> None:
    settings = GatewaySettings(
        **PRODUCTION,
        api_keys_file=tmp_path / "keys",
        request_id_key_file=tmp_path / "request-id-key",
    )  # type: ignore[arg-type]
    assert settings.unsafe_defaults() == []


@pytest.mark.usefixtures("clean_env")
def test_gateway_refuses_production_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The way a pod configures it: environment variables only."""
    monkeypatch.setenv("FORKCAST_ENVIRONMENT", "production")
    monkeypatch.setenv("FORKCAST_UPSTREAMS", "http://inference:8001")
    monkeypatch.setenv("REDIS_URL", "redis://:pw@redis:6379/0")
    with pytest.raises(ValidationError, match="FORKCAST_API_KEYS_FILE"):
        GatewaySettings()
