"""Processes the supervisor starts, and the proof that a PID still names one of them.

A PID alone can be reused by the kernel after a crash; the supervisor therefore records the process's start time
(field 22 of ``/proc/<pid>/stat``, in clock ticks since boot) and only ever signals a PID whose start time still
matches. Every component runs in its own session, so its process group (pgid = pid) also holds the children it
forks (MLflow's gunicorn workers), and stopping the group stops them too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None when there is no such (live) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after its closing one.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie has exited; only its exit status is left
        return None
    return int(fields[19])


def is_ours(pid: int, started: int) -> bool:
    """True when ``pid`` is alive and is the very process recorded with start time ``started``."""
    return pid > 0 and start_time(pid) == started


def group_members(pgid: int) -> list[int]:
    """Live PIDs whose process group is ``pgid`` (the component and every child it forked)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def spawn(argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> tuple[int, int]:
    """Start ``argv`` detached (own session, output appended to ``log``); returns (pid, start time)."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    started = start_time(proc.pid)
    if started is None:
        raise RuntimeError(f"{argv[0]} exited at once; see {log}")
    return proc.pid, started


def stop(pid: int, started: int, timeout_s: float = 20.0) -> bool:
    """SIGTERM the process group of ``pid`` if ``pid`` is still ours, SIGKILL what remains after ``timeout_s``.

    Returns False when the recorded process was already gone (nothing was signalled but its leftover children,
    which still carry its group id).
    """
    if pid <= 0:
        return False
    alive = is_ours(pid, started)
    # Linux never hands out a PID still in use as a process-group id, so a group whose leader is gone is still
    # ours; but if another process now holds the PID, the recorded group ended long ago: touch nothing.
    if not alive and (start_time(pid) is not None or not group_members(pid)):
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return alive
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _reap(pid)
        if not group_members(pid):
            return alive
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    _reap(pid)
    return alive


def _reap(pid: int) -> None:
    """Collect the exit status when the component is our own child (tests start it in-process)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
