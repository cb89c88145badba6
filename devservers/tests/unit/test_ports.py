"""Free ports: loopback-bindable, distinct, below the bound (Redis Cluster) and below the ephemeral range."""

from __future__ import annotations

import socket

from forkcast_devservers.ports import ephemeral_low, free_port, free_ports, port_free


def test_free_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    ports = free_ports(20)
    assert len(set(ports)) == 20
    assert all(p < ephemeral_low() for p in ports)
    for p in ports:
        with socket.socket() as s:
            # As every server here binds: SO_REUSEADDR, so a port in TIME_WAIT is still usable.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", p))


def test_max_port_bounds_every_port() -> None:
    assert all(p <= 21000 for p in free_ports(10, max_port=21000))
    assert free_port(max_port=20500) <= 20500


def test_a_listening_port_is_not_free() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert not port_free(s.getsockname()[1])
