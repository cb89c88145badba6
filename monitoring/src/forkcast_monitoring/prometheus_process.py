"""Transitional: only ``stop`` is left, for localplatform's drill_stack.py and drill_ci.py, which still stop their
``subprocess.Popen`` children with it. Prometheus, Alertmanager and every other server now start and stop through
``forkcast_devservers`` (``servers.Prometheus``, ``process.stop``); this module goes when those two imports do."""

from __future__ import annotations

import subprocess


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate one process we started, by its PID; kill it if it does not exit."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
