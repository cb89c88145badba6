"""Where the local platform lives: ports from ``platform.toml``, state and data under ``.local/``.

One config file sets the ports (by component: a workload of the render, or a server the platform runs beside it);
a port already taken by someone else is swapped for a free one and the choice is kept in ``.local/state.json``, so
a restart finds every component where it was. Secrets are generated on first use into ``.local/secrets/`` (mode
0600, never committed: forkcast_local.local_secrets).
"""

from __future__ import annotations

import json
import os
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = PACKAGE_ROOT / "platform.toml"
REPO_ROOT = PACKAGE_ROOT.parent


@dataclass(frozen=True)
class Speed:
    """Time compression of a run (the drills'): scrape and rule evaluation every ``scrape_s``, every rule's
    ``for:`` ``rules_for_s`` seconds and Alertmanager's intervals in seconds when ``fast_alerts``. The default is
    what the manifests say."""

    scrape_s: float = 15.0
    rules_for_s: int | None = None
    fast_alerts: bool = False


@dataclass(frozen=True)
class PlatformConfig:
    """The parsed ``platform.toml``, the root of the platform's state (``.local/`` by default), and the tree whose
    ``manifests/`` (and ``rollouts/``) the platform renders (the repository by default)."""

    root: Path
    ports: dict[str, int]
    settings: dict[str, str]
    bin_dir: Path = field(default_factory=lambda: Path(os.environ.get("FORKCAST_BIN_DIR", _venv_bin())))
    source: Path = REPO_ROOT
    speed: Speed = Speed()
    # Host names of servers outside the platform (the end-to-end drill's "GitLab"): name -> {port: loopback port}.
    extra_hosts: dict[str, dict[int, int]] = field(default_factory=dict)
    # Environment laid over a workload's rendered one (workload -> variables): a drill's time compression (the
    # online-AUC job's window), applied to the plan of the render, never a second description of the workload.
    env_overrides: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def overlay(self) -> str:
        return self.settings.get("overlay", "local")

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def api_key_file(self) -> Path:
        return self.root / "api-key"

    @property
    def secrets_dir(self) -> Path:
        return self.root / "secrets"

    @property
    def gitops(self) -> Path:
        return self.root / "gitops"

    def component_dir(self, name: str) -> Path:
        path = self.root / name.replace("/", "-")
        path.mkdir(parents=True, exist_ok=True)
        return path

    def log_file(self, name: str) -> Path:
        return self.component_dir(name) / f"{name.replace('/', '-')}.log"


def _venv_bin() -> str:
    """The directory of this interpreter: the workspace ``.venv/bin`` holding every forkcast CLI."""
    return str(Path(sys.executable).parent)


def load_config(path: Path = DEFAULT_CONFIG, root: Path | None = None, **extra: Any) -> PlatformConfig:
    """Read ``path``; the state root is ``root``, else ``$FORKCAST_LOCAL_ROOT``, else ``<repo>/.local``.
    ``extra`` sets the other fields (``source``, ``speed``, ``extra_hosts``, ``env_overrides``)."""
    raw: dict[str, Any] = tomllib.loads(path.read_text())
    root = root or Path(os.environ.get("FORKCAST_LOCAL_ROOT", REPO_ROOT / ".local"))
    root.mkdir(parents=True, exist_ok=True)
    ports = {str(k): int(v) for k, v in raw.get("ports", {}).items()}
    settings = {str(k): str(v) for k, v in raw.get("settings", {}).items()}
    return PlatformConfig(root=root.resolve(), ports=ports, settings=settings, **extra)


def read_state(config: PlatformConfig) -> dict[str, Any]:
    """``{"components": {name: {proc, port, ports, wanted, fingerprint}}}``; empty when nothing was started yet."""
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
