"""Ending a process that loaded the lake's native libraries: flush, then leave without interpreter finalization.

delta-rs (with pyarrow and boto3 beside it) can abort a process while Python finalizes it: its runtime's threads
still run when the interpreter tears down, and C++ ``std::terminate`` kills the process with SIGABRT ("terminate
called without an active exception") after its work was done and its output written (delta-io/delta-rs#2184,
pola-rs/polars#24169; the workaround both threads name is to end the process before finalization). Measured
here, 2026-12-05: 2 of 60 ``python -m forkcast_lake.datasets_fetch`` runs under CPU load exited -6 after printing
their complete result, which failed a CI job. So every command that may load deltalake ends through
:func:`exit_after`: stdio and logging flushed, then ``os._exit`` with the command's status, so a finished command
reports its own status, never the runtime's teardown. ``atexit`` handlers do not run; none of these commands
registers one (their files are written and closed inside ``main``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Callable
from typing import NoReturn

__all__ = ["exit_after", "exit_now"]


def exit_now(code: int) -> NoReturn:
    """Flush logging and stdio, then end the process with ``code``, skipping interpreter finalization."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe or stream: no reader is left
            stream.flush()
    os._exit(code)


def _status(exc: SystemExit) -> int:
    """The exit status Python would give for ``exc`` (printing a message code to stderr, as Python does)."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def exit_after(main: Callable[[], int]) -> NoReturn:
    """Run a console script's ``main`` and end the process with its status (argparse's exits included). An
    exception ``main`` lets through is printed as Python prints it and ends the process with Python's status for it
    (1; 130 for Ctrl-C), still without finalization: a crash after deltalake loaded must not become a SIGABRT."""
    try:
        code = main()
    except SystemExit as exc:
        code = _status(exc)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = 130
    except BaseException:
        traceback.print_exc()
        code = 1
    exit_now(code)
