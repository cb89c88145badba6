"""Free TCP ports on 127.0.0.1, chosen below the kernel's ephemeral range.

A client that keeps reconnecting to a dead port inside the ephemeral range (the gateway to a crashed inference) can
be handed that very port as its own source port and connect to itself (TCP simultaneous open on loopback); the port
is then taken and the restarted server would have to move. Below the range that cannot happen, so a server stopped
and started again on its old port (an outage drill) gets it back. Lifted from the local platform's config module.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

# The lowest port handed out: below it lie the well-known and registered ports of common daemons.
LOW = 20000
_rng = random.Random()


def ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (``net.ipv4.ip_local_port_range``), 32768 if unreadable."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def port_free(port: int) -> bool:
    """True when a server could listen on 127.0.0.1:``port`` now.

    SO_REUSEADDR as uvicorn, Redis and weed set it, so a port whose last connections linger in TIME_WAIT (a server
    just killed) still counts as free.
    """
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(*, max_port: int = 65535) -> int:
    """A port free on 127.0.0.1 now, at most ``max_port`` (Redis Cluster nodes need ≤ 55535: bus = port + 10000)."""
    return free_ports(1, max_port=max_port)[0]


def free_ports(n: int, *, max_port: int = 65535) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 now, each at most ``max_port``."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    top = min(ephemeral_low(), max_port + 1)
    chosen: list[int] = []
    for _ in range(200 * max(n, 1)):
        if len(chosen) == n:
            return chosen
        port = _rng.randrange(LOW, max(top, LOW + 1))
        if port <= max_port and port not in chosen and port_free(port):
            chosen.append(port)
    # The range below the ephemeral one is crowded: let the kernel pick, keeping the bound.
    for _ in range(1000):
        if len(chosen) == n:
            return chosen
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port <= max_port and port not in chosen:
            chosen.append(port)
    raise RuntimeError(f"found only {len(chosen)} of {n} free ports at or below {max_port}")
