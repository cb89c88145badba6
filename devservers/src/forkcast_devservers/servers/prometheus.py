"""Prometheus and Alertmanager on 127.0.0.1 with a configuration file the caller renders (from the manifests).

Both answer ``GET /-/ready`` with 200 once they serve (Prometheus after its TSDB is open and the config loaded;
https://prometheus.io/docs/prometheus/latest/management_api/ and
https://prometheus.io/docs/alerting/latest/management_api/).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from forkcast_devservers.binaries import ALERTMANAGER, PROMETHEUS, locate
from forkcast_devservers.ready import http_ok
from forkcast_devservers.servers.base import HOST, Server


class _Configured(Server):
    """What the two share: a ``config`` file, extra command-line ``flags``, an HTTP ``url`` and ``/-/ready``."""

    def __init__(
        self, dir: Path, *, config: Path, port: int | None = None, flags: Sequence[str] = ()
    ) -> None:
        super().__init__(dir, port=port)
        self.config = config
        self.flags = tuple(flags)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def ready(self) -> bool:
        return http_ok(f"{self.url}/-/ready")


class Prometheus(_Configured):
    """Prometheus with ``config``, its TSDB under ``dir/tsdb``; ``flags`` adds command-line flags
    (``--web.enable-lifecycle``, ``--enable-feature=...``)."""

    what = "prometheus"

    def argv(self) -> list[str]:
        return [
            locate(PROMETHEUS),
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.dir / 'tsdb'}",
            f"--web.listen-address={HOST}:{self.port}",
            *self.flags,
        ]


class Alertmanager(_Configured):
    """Alertmanager with ``config``, data under ``dir/data``, clustering off (one instance, no gossip port)."""

    what = "alertmanager"

    def argv(self) -> list[str]:
        return [
            locate(ALERTMANAGER),
            f"--config.file={self.config}",
            f"--storage.path={self.dir / 'data'}",
            f"--web.listen-address={HOST}:{self.port}",
            # An empty cluster address disables high-availability mode (and its gossip port 9094).
            "--cluster.listen-address=",
            *self.flags,
        ]
