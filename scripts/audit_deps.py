"""Audit every locked dependency for known vulnerabilities (pip-audit against uv.lock), tolerating no network.

Run from the repository root: ``.venv/bin/python scripts/audit_deps.py`` (``make audit``). It exports the lock to a
requirements file (``uv export --frozen --all-packages --no-hashes``, workspace members left out: they are not on
any index) and runs ``pip-audit -r <file> --disable-pip --no-deps`` on it, so the result is the lock's, not the
virtual environment's.

Exit status: 0 no known vulnerability, or the audit was skipped because the vulnerability service could not be
reached or answered for none of the packages ("audit skipped: <reason>"); 1 vulnerabilities found (each listed);
2 the audit itself failed for another reason (uv or pip-audit broken). It needs the network and is therefore not
part of the pytest suite; the report handling is tested offline in tests/security/test_audit_deps.py.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# What pip-audit's traceback or message says when the service is out of reach (DNS, connect, timeout, 5xx).
UNREACHABLE = (
    "ConnectionError",
    "NameResolutionError",
    "Max retries exceeded",
    "ConnectTimeout",
    "ReadTimeout",
    "timed out",
    "ServiceError",
    "Temporary failure in name resolution",
    "Network is unreachable",
)


@dataclass(frozen=True)
class Vulnerability:
    package: str
    version: str
    id: str
    fix_versions: tuple[str, ...]
    aliases: tuple[str, ...]


@dataclass(frozen=True)
class Outcome:
    status: int  # 0 clean or skipped, 1 vulnerable, 2 failed
    lines: tuple[str, ...]


def parse_report(report: dict[str, Any]) -> tuple[list[Vulnerability], int, int]:
    """Vulnerabilities in pip-audit's JSON report, the number of packages audited and the number skipped."""
    vulns: list[Vulnerability] = []
    audited = skipped = 0
    for dep in report.get("dependencies", []):
        if "skip_reason" in dep:
            skipped += 1
            continue
        audited += 1
        vulns.extend(
            Vulnerability(
                dep["name"],
                dep.get("version", "?"),
                v["id"],
                tuple(v.get("fix_versions", [])),
                tuple(v.get("aliases", [])),
            )
            for v in dep.get("vulns", [])
        )
    return vulns, audited, skipped


def judge(returncode: int, report_text: str | None, stderr: str) -> Outcome:
    """Turn one pip-audit run (exit status, JSON report if it wrote one, stderr) into the script's outcome."""
    if report_text:
        vulns, audited, skipped = parse_report(json.loads(report_text))
        if vulns:
            lines = [f"{len(vulns)} known vulnerabilities in the locked dependencies:"]
            lines += [
                f"  {v.package}=={v.version}: {v.id}"
                + (f" ({', '.join(v.aliases)})" if v.aliases else "")
                + (f"; fixed in {', '.join(v.fix_versions)}" if v.fix_versions else "; no fixed version yet")
                for v in vulns
            ]
            return Outcome(1, tuple(lines))
        if audited == 0:
            return Outcome(
                0,
                (
                    f"audit skipped: the vulnerability service answered for none of the {skipped} locked packages "
                    "(an index mirror without its JSON API, or no network)",
                ),
            )
        note = f" ({skipped} not found on the index and not audited)" if skipped else ""
        return Outcome(0, (f"no known vulnerabilities in {audited} locked packages{note}",))
    if any(marker in stderr for marker in UNREACHABLE):
        reason = next(line for line in reversed(stderr.splitlines()) if line.strip())
        return Outcome(0, (f"audit skipped: vulnerability service unreachable: {reason.strip()[:300]}",))
    tail = "\n".join(stderr.strip().splitlines()[-10:])
    return Outcome(2, (f"audit failed (pip-audit exit {returncode}):", tail))


def export_lock(uv: str, dest: Path) -> None:
    subprocess.run(
        [
            uv,
            "export",
            "--frozen",
            "--all-packages",
            "--no-hashes",
            "--no-emit-workspace",
            "--format",
            "requirements-txt",
            "--output-file",
            str(dest),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="audit_deps.py", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--uv", default=shutil.which("uv") or "uv", help="the uv executable (default: uv on PATH)"
    )
    parser.add_argument(
        "--pip-audit",
        default=str(Path(sys.executable).with_name("pip-audit")),
        help="the pip-audit executable (default: the one beside this Python)",
    )
    parser.add_argument(
        "--service", choices=("pypi", "osv"), default="pypi", help="vulnerability service pip-audit asks"
    )
    parser.add_argument("--timeout", type=int, default=15, help="socket timeout of each request, seconds")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="forkcast-audit-") as tmp:
        requirements, report = Path(tmp) / "requirements.txt", Path(tmp) / "report.json"
        try:
            export_lock(args.uv, requirements)
        except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            stderr = getattr(exc, "stderr", b"") or b""
            print(f"audit failed: uv export: {exc} {stderr.decode(errors='replace')}", file=sys.stderr)
            return 2
        cmd = [
            args.pip_audit,
            "-r",
            str(requirements),
            "--disable-pip",
            "--no-deps",
            "--vulnerability-service",
            args.service,
            "--timeout",
            str(args.timeout),
            "--progress-spinner",
            "off",
            "--format",
            "json",
            "--output",
            str(report),
        ]
        try:
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        except (OSError, subprocess.TimeoutExpired) as exc:
            print(f"audit failed: {exc}", file=sys.stderr)
            return 2
        report_text = report.read_text() if report.is_file() and report.stat().st_size else None
        outcome = judge(run.returncode, report_text, run.stderr)
    print("\n".join(outcome.lines), file=sys.stderr if outcome.status == 2 else sys.stdout)
    return outcome.status


if __name__ == "__main__":
    sys.exit(main())
