"""spawn/stop by PID + start time: the group goes down, a reused PID is never signalled, a dead server fails fast."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from forkcast_devservers.process import Proc, group_members, spawn, start_ticks, stop, tail, wait_exit
from forkcast_devservers.ready import wait_until

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def test_spawn_records_the_start_time_and_stop_ends_the_whole_group(tmp_path: Path) -> None:
    # The parent forks a child into its own group (as MLflow forks gunicorn workers) and prints its PID.
    script = (
        "import subprocess, sys, time\n"
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(c.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = spawn([sys.executable, "-c", script], log=tmp_path / "p.log")
    assert proc.start_ticks == start_ticks(proc.pid)
    assert proc.alive()
    wait_until(lambda: tail(tmp_path / "p.log", 1).strip().isdigit(), timeout_s=10, what="child pid")
    child = int(tail(tmp_path / "p.log", 1))
    assert sorted(group_members(proc.pid)) == sorted([proc.pid, child])

    stop(proc, grace_s=5)

    assert not proc.alive()
    assert start_ticks(child) is None, "the forked child outlived stop()"
    assert group_members(proc.pid) == []


def test_a_pid_whose_start_time_changed_is_never_signalled() -> None:
    other = subprocess.Popen(SLEEPER)
    try:
        real = start_ticks(other.pid)
        assert real is not None
        # The record says the PID started at another time: it names a process that ended, not this one.
        stale = Proc(other.pid, real - 1, ("redis-server",), None)
        assert not stale.alive()
        stop(stale, grace_s=1)
        time.sleep(0.2)
        assert other.poll() is None, "stop() signalled a process that merely reuses the recorded PID"
    finally:
        other.kill()
        other.wait()


def test_sigterm_ignored_is_followed_by_sigkill_after_the_grace(tmp_path: Path) -> None:
    script = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('up', flush=True)\n"
        "time.sleep(60)"
    )
    proc = spawn([sys.executable, "-c", script], log=tmp_path / "stubborn.log")
    wait_until(lambda: "up" in tail(tmp_path / "stubborn.log", 1), timeout_s=10, what="stubborn")
    began = time.monotonic()
    stop(proc, grace_s=0.5)
    assert not proc.alive()
    assert 0.5 <= time.monotonic() - began < 5


def test_round_trip_through_a_state_file(tmp_path: Path) -> None:
    proc = Proc(123, 456, ("redis-server", "--port", "1"), tmp_path / "r.log")
    assert Proc.from_dict(proc.to_dict()) == proc
    assert Proc.from_dict(Proc(1, 2, (), None).to_dict()).log is None


def test_a_program_that_exits_at_once_is_an_error_with_its_output(tmp_path: Path) -> None:
    log = tmp_path / "bad.log"
    script = "import sys; print('bad flag --nope'); sys.exit(3)"
    proc = spawn([sys.executable, "-c", script], log=log)
    with pytest.raises(RuntimeError, match=r"python-ish exited before it was ready[\s\S]*bad flag --nope"):
        wait_until(lambda: False, timeout_s=30, what="python-ish", proc=proc)


def test_wait_until_names_what_timed_out() -> None:
    with pytest.raises(TimeoutError, match=r"the thing not ready within 0\.2 s"):
        wait_until(lambda: False, timeout_s=0.2, what="the thing")


def test_tail_returns_the_last_lines(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_text("".join(f"line {i}\n" for i in range(100)))
    assert tail(path, 2) == "line 98\nline 99"
    assert tail(tmp_path / "missing", 5) == ""


def test_spawn_passes_exactly_the_environment_given(tmp_path: Path) -> None:
    log = tmp_path / "env.log"
    proc = spawn(
        [sys.executable, "-c", "import os; print(sorted(k for k in os.environ if k.startswith('FCDV')))"],
        env={"FCDV_ONE": "1", "PATH": os.environ["PATH"]},
        log=log,
    )
    wait_until(lambda: not proc.alive(), timeout_s=10, what="env printer")
    assert tail(log, 1) == "['FCDV_ONE']"


def test_wait_exit_reports_the_status_or_none_when_stop_reaped_it(tmp_path: Path) -> None:
    assert wait_exit(spawn([sys.executable, "-c", "raise SystemExit(3)"])) == 3
    proc = spawn(SLEEPER)
    stop(proc, grace_s=5)
    # stop reaps its own child as it waits (None here), unless the child turned zombie between two of its looks;
    # either way a stopped command never reads as a success.
    assert wait_exit(proc) in (None, -signal.SIGTERM)
