"""What every server here shares: a data directory, a port on 127.0.0.1, start = spawn + wait, stop by PID.

A subclass says only how to run its program (``argv``, ``env``) and how to tell it is ready (``ready``). A stopped
server can be started again with the same object: it comes back on the same ports with the same data (an outage,
not a move), which the fault drills rely on.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

from forkcast_devservers.ports import free_port
from forkcast_devservers.process import Proc, spawn, stop
from forkcast_devservers.ready import wait_until

# Every server here binds loopback only.
HOST = "127.0.0.1"


class Server(ABC):
    """Base of the servers in this package; use it as a context manager or call ``start``/``stop``."""

    #: The name used in log file names and error messages.
    what = "server"
    #: How long ``start`` waits for readiness (mlflow server takes the longest, ~10-30 s on 2 cores).
    ready_timeout_s = 60.0
    #: SIGTERM grace before SIGKILL.
    grace_s = 10.0

    def __init__(self, dir: Path, *, port: int | None = None) -> None:
        self.dir = Path(dir)
        self.port = port if port is not None else free_port()
        self.proc: Proc | None = None

    @property
    def log(self) -> Path:
        """The file the server's stdout and stderr go to."""
        return self.dir / f"{self.what}.log"

    @abstractmethod
    def argv(self) -> list[str]:
        """The command line (the binary located by ``forkcast_devservers.binaries``)."""

    def env(self) -> Mapping[str, str]:
        """Variables added to this process's environment for the server."""
        return {}

    @abstractmethod
    def ready(self) -> bool:
        """True once the server answers its clients."""

    def start(self) -> Self:
        """Start the server and wait until it is ready; on failure nothing is left running."""
        if self.proc is not None and self.proc.alive():
            return self
        self.dir.mkdir(parents=True, exist_ok=True)
        argv = self.argv()
        self.proc = spawn(argv, env={**os.environ, **self.env()}, cwd=self.dir, log=self.log)
        try:
            wait_until(self.ready, timeout_s=self.ready_timeout_s, what=self.what, proc=self.proc)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop exactly the process group this object started (SIGTERM, then SIGKILL after ``grace_s``)."""
        if self.proc is not None:
            stop(self.proc, grace_s=self.grace_s)
            self.proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.proc.pid}" if self.proc is not None else "stopped"
        return f"<{type(self).__name__} 127.0.0.1:{self.port} {state} dir={self.dir}>"
