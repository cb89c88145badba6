"""redis-server on 127.0.0.1, standalone or as a Redis Cluster made with ``redis-cli --cluster create``.

Without ``persistence`` a server keeps nothing on disk (no RDB snapshots, no AOF): tests and benchmarks want a clean
slate and no fsync in their timings. With it, RDB snapshots (``save 60 1000``) go to the data directory, as the local
platform keeps its features across ``make down``/``make up``. ``conf`` appends any other ``--name value`` flags
(``maxmemory``, ``appendonly yes``...); later flags win, as in redis.conf.
"""

from __future__ import annotations

import subprocess
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Self

from forkcast_devservers import resp
from forkcast_devservers.binaries import REDIS_CLI, REDIS_SERVER, locate
from forkcast_devservers.ports import free_ports, port_free
from forkcast_devservers.ready import wait_until
from forkcast_devservers.servers.base import HOST, Server

# A cluster node also listens on its cluster bus port: "The cluster bus port (the client port + 10000)" (Redis
# Cluster tutorial, redis.io/docs/latest/operate/oss_and_stack/management/scaling/; made configurable as
# `cluster-port` in Redis 7, redis/redis#9389, default still +10000), so node ports stay at or below 65535 - 10000.
CLUSTER_BUS_OFFSET = 10000
CLUSTER_MAX_PORT = 65535 - CLUSTER_BUS_OFFSET


class RedisServer(Server):
    """One redis-server; ``.url`` is ``redis://127.0.0.1:PORT/0`` (``redis://:PASSWORD@...`` with a password)."""

    what = "redis-server"
    ready_timeout_s = 30.0

    def __init__(
        self,
        dir: Path,
        *,
        port: int | None = None,
        conf: Sequence[str] = (),
        aclfile: Path | None = None,
        password: str | None = None,
        persistence: bool = False,
        username: str | None = None,
    ) -> None:
        """``password`` sets ``requirepass`` (the default user's password); ``aclfile`` loads ACL users from a file
        (then ``username``/``password`` are what ``command`` and the URL authenticate with)."""
        super().__init__(dir, port=port)
        self.conf = tuple(conf)
        self.aclfile = aclfile
        self.password = password
        self.username = username
        self.persistence = persistence

    @property
    def host(self) -> str:
        return HOST

    @property
    def url(self) -> str:
        """The client URL; it carries the password when there is one: never log it."""
        if self.password is None:
            return f"redis://{HOST}:{self.port}/0"
        user = urllib.parse.quote(self.username or "", safe="")
        secret = urllib.parse.quote(self.password, safe="")
        return f"redis://{user}:{secret}@{HOST}:{self.port}/0"

    def argv(self) -> list[str]:
        snapshots = ["--save", "60 1000"] if self.persistence else ["--save", ""]
        argv = [
            locate(REDIS_SERVER),
            "--bind", HOST,
            "--port", str(self.port),
            "--dir", str(self.dir),
            "--protected-mode", "yes",
            *snapshots,
            "--appendonly", "no",
        ]  # fmt: skip
        if self.aclfile is not None:
            argv += ["--aclfile", str(self.aclfile)]
        elif self.password is not None:
            argv += ["--requirepass", self.password]
        return argv + list(self.conf)

    def command(self, *args: str, timeout_s: float = 5.0) -> resp.Reply:
        """One command over a fresh connection, authenticated as this object's user (for probes and set-up)."""
        return resp.command(
            HOST, self.port, *args, username=self.username, password=self.password, timeout_s=timeout_s
        )

    def ready(self) -> bool:
        # Ours, not merely "a Redis on this port": INFO's process_id must be the PID we started (a server that could
        # not bind exits, while another answers on its port). LOADING (reading a big RDB) is not ready yet; an auth
        # refusal (no credentials for INFO) proves the server is up, and our PID is then checked to be alive.
        try:
            info = self.info("server")
        except resp.RespError as err:
            return not str(err).startswith("LOADING")
        return self.proc is not None and int(info.get("process_id", "-1")) == self.proc.pid

    def info(self, section: str = "default") -> dict[str, str]:
        """``INFO section`` as a dict."""
        reply = self.command("INFO", section)
        assert isinstance(reply, bytes)
        return resp.parse_info(reply)

    def cpu_seconds(self) -> float:
        """The server's own CPU time (user + sys), to charge Redis's share of a benchmark."""
        cpu = self.info("cpu")
        return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


class RedisCluster:
    """``masters`` primaries (each with ``replicas`` replicas) joined into a Redis Cluster, all on 127.0.0.1.

    Node ports are chosen so that each bus port (port + 10000) is free too. Stopped and started again, the nodes
    reload their ``nodes.conf`` and re-form the same cluster.
    """

    ready_timeout_s = 60.0

    def __init__(self, dir: Path, *, masters: int = 3, replicas: int = 0) -> None:
        if masters < 3:
            raise ValueError(
                "Redis Cluster needs at least 3 masters (redis-cli --cluster create refuses fewer)"
            )
        self.dir = Path(dir)
        self.masters = masters
        self.replicas = replicas
        ports = _cluster_ports(masters * (1 + replicas))
        self.nodes: list[RedisServer] = [
            RedisServer(
                self.dir / str(p),
                port=p,
                conf=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(self.dir / str(p) / "nodes.conf"),
                ),
            )
            for p in ports
        ]

    @property
    def url(self) -> str:
        """A node's URL: a cluster client discovers the rest from it."""
        return self.nodes[0].url

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """(host, port) of every node, for ``redis.cluster.ClusterNode(host, port)``."""
        return [(HOST, n.port) for n in self.nodes]

    def start(self) -> Self:
        """Start every node, create the cluster once (slots split evenly), wait until every node says ``ok``."""
        try:
            for node in self.nodes:
                node.start()
            if not self._formed():
                subprocess.run(
                    [
                        locate(REDIS_CLI), "--cluster", "create",
                        *(f"{HOST}:{n.port}" for n in self.nodes),
                        "--cluster-replicas", str(self.replicas), "--cluster-yes",
                    ],
                    check=True,
                    capture_output=True,
                    timeout=60,
                )  # fmt: skip
            wait_until(self._all_ok, timeout_s=self.ready_timeout_s, what="redis cluster")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def cpu_seconds(self) -> float:
        """CPU time of every node together."""
        return sum(n.cpu_seconds() for n in self.nodes)

    def _cluster_info(self, node: RedisServer) -> dict[str, str]:
        reply = node.command("CLUSTER", "INFO")
        assert isinstance(reply, bytes)
        return resp.parse_info(reply)

    def _formed(self) -> bool:
        """True when the nodes already know each other (a restart from their nodes.conf)."""
        return all(int(self._cluster_info(n).get("cluster_known_nodes", "1")) > 1 for n in self.nodes)

    def _all_ok(self) -> bool:
        return all(self._cluster_info(n).get("cluster_state") == "ok" for n in self.nodes)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _cluster_ports(n: int) -> list[int]:
    """``n`` distinct node ports ≤ CLUSTER_MAX_PORT whose bus ports are free as well."""
    chosen: list[int] = []
    for _ in range(100):
        for port in free_ports(n, max_port=CLUSTER_MAX_PORT):
            taken = {*chosen, *(c + CLUSTER_BUS_OFFSET for c in chosen)}
            bus = port + CLUSTER_BUS_OFFSET
            if port not in taken and bus not in taken and port_free(bus):
                chosen.append(port)
            if len(chosen) == n:
                return chosen
    raise RuntimeError(
        f"could not find {n} free Redis Cluster port pairs (port and port + {CLUSTER_BUS_OFFSET})"
    )
