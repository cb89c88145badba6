"""Processes we start, and the proof that a PID still names one of them.

A PID alone can be reused by the kernel after a crash, so a ``Proc`` also records the process's start time (field 22
of ``/proc/<pid>/stat``, in clock ticks since boot) and only a PID whose start time still matches is ever signalled.
Every process runs in its own session, so its process group (pgid = pid) also holds the children it forks (MLflow's
gunicorn workers), and stopping the group stops them too. Lifted from the local platform's supervisor, where this
proved itself across ``make up``/``make down`` cycles.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None when there is no such live process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after its closing one.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie has exited; only its exit status is left
        return None
    return int(fields[19])


def group_members(pgid: int) -> list[int]:
    """Live PIDs whose process group is ``pgid`` (the leader and every child it forked)."""
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (fields 14-15 of ``/proc/<pid>/stat``), for benchmarks."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` now (``VmRSS`` of ``/proc/<pid>/status``) in MiB; NaN when not reported."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass(frozen=True)
class Proc:
    """One process we started: its PID, its start time (which makes the PID unambiguous), argv and log file."""

    pid: int
    start_ticks: int
    argv: tuple[str, ...]
    log: Path | None

    def alive(self) -> bool:
        """True when the PID exists and is still the very process recorded (same start time)."""
        return self.pid > 0 and start_ticks(self.pid) == self.start_ticks

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able record (the local platform keeps these in its state file across CLI calls)."""
        return {
            "pid": self.pid,
            "start_ticks": self.start_ticks,
            "argv": list(self.argv),
            "log": None if self.log is None else str(self.log),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Proc:
        """The inverse of ``to_dict``."""
        log = data.get("log")
        return cls(
            pid=int(data["pid"]),
            start_ticks=int(data["start_ticks"]),
            argv=tuple(str(a) for a in data.get("argv", ())),
            log=None if log is None else Path(log),
        )


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    log: Path | None = None,
) -> Proc:
    """Start ``argv`` in its own session (process group), stdout and stderr appended to ``log`` (else discarded).

    ``env`` is the whole environment of the child (None: inherit ours). Raises when the program is missing or
    exits before its start time could be read.
    """
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
    sink = log.open("ab") if log is not None else subprocess.DEVNULL
    try:
        child = subprocess.Popen(
            list(argv),
            env=None if env is None else dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        if log is not None and not isinstance(sink, int):
            sink.close()
    started = start_ticks(child.pid)
    if started is None:
        child.wait()
        where = f"; see {log}:\n{tail(log, 20)}" if log is not None else ""
        raise RuntimeError(f"{argv[0]} exited at once with status {child.returncode}{where}")
    return Proc(child.pid, started, tuple(argv), log)


def stop(proc: Proc, *, grace_s: float = 10.0) -> None:
    """SIGTERM the process group of ``proc``, wait up to ``grace_s``, then SIGKILL what remains.

    Never signals a PID whose start time changed: if another process now holds the PID, the recorded one ended
    long ago and nothing is touched. A group whose leader is gone is still ours (Linux never hands out a PID still
    in use as a process-group id), so leftover children are stopped too.
    """
    pid = proc.pid
    if pid <= 0:
        return
    if not proc.alive() and (start_ticks(pid) is not None or not group_members(pid)):
        _reap(pid)
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        _reap(pid)
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        _reap(pid)
        if not group_members(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while group_members(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.02)
    _reap(pid)


def wait_exit(proc: Proc) -> int | None:
    """Block until ``proc``, a child of this process (from ``spawn``), exits; its exit status as ``subprocess``
    reports it (minus the signal number when a signal ended it), or None when ``stop`` collected it first.

    For callers that run a command to its end in a thread and may ``stop`` it from another: whichever of the two
    reaps the child, neither blocks forever and a stopped command never reads as a success.
    """
    try:
        _, status = os.waitpid(proc.pid, 0)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status)


def tail(path: Path, n: int) -> str:
    """The last ``n`` lines of ``path`` (empty when it does not exist), for error messages."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read()
    except OSError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-n:])


def _reap(pid: int) -> None:
    """Collect the exit status when the process is our own child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
