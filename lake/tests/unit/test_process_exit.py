"""A command that may load delta-rs ends through exit_after: its own status, output flushed, no finalization.

delta-rs can abort the interpreter's finalization with SIGABRT after a command finished (forkcast_lake.process_exit),
so the commands skip finalization. Shown in a child process: an ``atexit`` handler (finalization's first step)
never runs, yet what the command printed and logged, unterminated lines included, reaches the reader, and the
status is the command's own, argparse's ``SystemExit`` included; an exception it lets through is printed with its
traceback and exits 1, as Python would, still without finalization. Then that every console script and module that
may load deltalake is wired through it.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

CHILD = """
import atexit, logging, sys
from pathlib import Path
from forkcast_lake.process_exit import exit_after

marker = Path(sys.argv[1])
atexit.register(marker.write_text, "finalized")
logging.basicConfig(level=logging.INFO, format="%(message)s")

def main() -> int:
    print("result without a newline", end="")
    logging.getLogger("cmd").info("logged line")
    sys.stderr.write("partial stderr")
    outcome = sys.argv[2]
    if outcome == "usage":
        raise SystemExit(2)
    if outcome == "message":
        raise SystemExit("bad usage")
    if outcome == "crash":
        raise RuntimeError("a bug after deltalake loaded")
    return int(outcome)

exit_after(main)
"""


@pytest.mark.parametrize(
    ("outcome", "status", "stderr_tail"),
    [
        ("0", 0, "partial stderr"),
        ("3", 3, "partial stderr"),
        ("usage", 2, "partial stderr"),
        ("message", 1, "bad usage\n"),
        ("crash", 1, "RuntimeError: a bug after deltalake loaded\n"),
    ],
)
def test_the_command_status_and_output_arrive_and_finalization_is_skipped(
    tmp_path: Path, outcome: str, status: int, stderr_tail: str
) -> None:
    marker = tmp_path / "atexit-ran"
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(marker), outcome], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == status, done.stderr
    assert done.stdout == "result without a newline"
    assert "logged line\n" in done.stderr
    assert done.stderr.endswith(stderr_tail)
    assert not marker.exists(), "exit_after ran the interpreter's finalization (atexit handlers)"


@pytest.mark.parametrize(
    ("pyproject", "script", "target"),
    [
        ("lake/pyproject.toml", "forkcast-lake", "forkcast_lake.cli:run"),
        ("datagen/pyproject.toml", "forkcast-data", "forkcast_data.cli:run"),
        ("localplatform/pyproject.toml", "forkcast-local", "forkcast_local.cli:run"),
    ],
)
def test_every_console_script_that_may_load_deltalake_ends_through_exit_after(
    pyproject: str, script: str, target: str
) -> None:
    scripts = tomllib.loads((ROOT / pyproject).read_text())["project"]["scripts"]
    assert scripts[script] == target
    module, _, function = target.partition(":")
    source = (ROOT / pyproject).parent.joinpath("src", *module.split(".")).with_suffix(".py").read_text()
    assert f"def {function}() -> NoReturn:\n" in source and "exit_after(main)" in source


def test_the_dataset_fetch_child_ends_through_exit_after() -> None:
    """The child every ``--data s3://…`` consumer runs (forkcast_lake.datasets_read): the abort CI met."""
    source = (ROOT / "lake/src/forkcast_lake/datasets_fetch.py").read_text()
    last = source.rstrip().splitlines()[-2:]
    assert last[0] == 'if __name__ == "__main__":' and last[1].startswith("    exit_after(main)")
