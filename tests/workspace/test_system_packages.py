"""`make system-packages` on a fresh machine: Node.js comes with it exactly when no `npx` is on PATH, and the CI
pipeline test fails (never skips) with the install hint when npx is missing.

The script runs for real with ``--list-missing`` (it prints what it would apt-get install and installs nothing);
only its PATH is narrowed to a folder holding the tools it uses, so "no npx on this machine" is real for it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "install-system-packages.sh"
# What the script itself calls; everything else (npx above all) is absent from the narrowed PATH.
SCRIPT_TOOLS = ("dirname", "sed", "awk", "dpkg-query", "grep")


def _tool_dir(folder: Path, *, with_npx: bool) -> Path:
    folder.mkdir()
    for tool in SCRIPT_TOOLS:
        found = shutil.which(tool)
        assert found is not None, f"{tool} is not installed: the script needs it"
        (folder / tool).symlink_to(found)
    if with_npx:
        # Only its presence counts (`command -v npx`), as for NodeSource's or nvm's npx.
        (folder / "npx").write_text("#!/bin/sh\nexit 0\n")
        (folder / "npx").chmod(0o755)
    return folder


def _missing(path: Path) -> list[str]:
    bash = shutil.which("bash")
    assert bash is not None
    out = subprocess.run(
        [bash, str(SCRIPT), "--list-missing"],
        env={"PATH": str(path)},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return out.stdout.split()


def test_without_npx_the_script_installs_debians_nodejs_and_npm(tmp_path: Path) -> None:
    missing = _missing(_tool_dir(tmp_path / "bin", with_npx=False))
    assert missing[-2:] == ["nodejs", "npm"], missing


def test_with_an_npx_present_it_never_asks_for_debians_npm(tmp_path: Path) -> None:
    """Debian's npm conflicts with NodeSource's nodejs (which bundles npm): asking apt for it would break Node."""
    missing = _missing(_tool_dir(tmp_path / "bin", with_npx=True))
    assert "npm" not in missing and "nodejs" not in missing, missing


def test_the_ci_pipeline_test_fails_with_the_install_hint_when_npx_is_missing(tmp_path: Path) -> None:
    """Run the real CI test file on a PATH without npx: its gcl fixture fails (a skip would pass silently)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    git = shutil.which("git")
    assert git is not None
    (bin_dir / "git").symlink_to(git)
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfEs"),
            "tests/ci/test_gitlab_ci_local.py::test_push_runs_lint_test_build_and_no_retraining",
        ],
        cwd=ROOT,
        env={**os.environ, "PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout[-2000:]
    assert "1 error" in result.stdout and "skipped" not in result.stdout, result.stdout[-2000:]
    assert "npx not found on PATH" in result.stdout and "make system-packages" in result.stdout
