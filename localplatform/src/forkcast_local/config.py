"""Where the local platform lives: ports from ``platform.toml``, state and data under ``.local/``.

One config file sets the ports; a port already taken by someone else is swapped for a free one and the choice is
kept in ``.local/state.json``, so a restart finds every component where it was. Secrets (the S3 credentials of the
loopback SeaweedFS, the demo API key) are generated on first use into ``.local/`` (mode 0600), never committed.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import socket
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = PACKAGE_ROOT / "platform.toml"
REPO_ROOT = PACKAGE_ROOT.parent


@dataclass(frozen=True)
class PlatformConfig:
    """The parsed ``platform.toml`` plus the root of the platform's state (``.local/`` by default)."""

    root: Path
    ports: dict[str, int]
    settings: dict[str, str]
    bin_dir: Path = field(default_factory=lambda: Path(os.environ.get("FORKCAST_BIN_DIR", _venv_bin())))

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def api_key_file(self) -> Path:
        return self.root / "api-key"

    @property
    def keys_file(self) -> Path:
        return self.root / "gateway" / "api-keys"

    @property
    def gitops(self) -> Path:
        return self.root / "gitops"

    def component_dir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def log_file(self, name: str) -> Path:
        return self.component_dir(name) / f"{name}.log"


def _venv_bin() -> str:
    """The directory of this interpreter: the workspace ``.venv/bin`` holding every forkcast CLI."""
    return str(Path(sys.executable).parent)


def load_config(path: Path = DEFAULT_CONFIG, root: Path | None = None) -> PlatformConfig:
    """Read ``path``; the state root is ``root``, else ``$FORKCAST_LOCAL_ROOT``, else ``<repo>/.local``."""
    raw: dict[str, Any] = tomllib.loads(path.read_text())
    root = root or Path(os.environ.get("FORKCAST_LOCAL_ROOT", REPO_ROOT / ".local"))
    root.mkdir(parents=True, exist_ok=True)
    ports = {str(k): int(v) for k, v in raw.get("ports", {}).items()}
    settings = {str(k): str(v) for k, v in raw.get("settings", {}).items()}
    return PlatformConfig(root=root.resolve(), ports=ports, settings=settings)


def port_free(port: int) -> bool:
    """True when a server could listen on ``port``: SO_REUSEADDR as uvicorn, Redis and weed set it, so a port
    whose last connections linger in TIME_WAIT (a component just killed) still counts as free."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A free port below the kernel's ephemeral range, where the fixed ports of platform.toml also are.

    A client that keeps reconnecting to a dead port inside the ephemeral range (the gateway to a crashed inference)
    can be handed that very port as its own source port and connect to itself (TCP simultaneous open on loopback);
    the port is then taken and the restarted server would have to move. Below the range that cannot happen.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, max(low, 20001))
        if port_free(port):
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def read_state(config: PlatformConfig) -> dict[str, Any]:
    """``{"components": {name: {pid, start_time, port, ...}}}``; empty when nothing was started yet."""
    if not config.state_file.is_file():
        return {"components": {}}
    data: dict[str, Any] = json.loads(config.state_file.read_text())
    data.setdefault("components", {})
    return data


def write_state(config: PlatformConfig, state: dict[str, Any]) -> None:
    """Atomic replace, so a crash mid-write never leaves a state file that `down` cannot read."""
    tmp = config.state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    tmp.replace(config.state_file)


def local_secret(config: PlatformConfig, name: str, nbytes: int = 24) -> str:
    """A random secret kept in ``.local/secrets/<name>`` (0600), created on first use and stable afterwards."""
    path = config.root / "secrets" / name
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    value = secrets.token_urlsafe(nbytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value
