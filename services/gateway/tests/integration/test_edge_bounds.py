"""One body cap and one read deadline for every route (issue 18.4), and 405 before the key check (issue 18.8).

Real sockets: a chunked body without Content-Length that grows past the cap, and a body that drips slower than the
deadline, sent to /recommend, /feedback, /admin/* and an unknown path. Before the fix only /recommend bounded its
body; /feedback and /admin/* read a chunked body of any size and waited for a drip for ever.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import pytest
import requests

from forkcast_gateway.edge import Edge
from forkcast_gateway.testing import ADMIN_KEY, KEY, StandIn, serve

CAP = 4096
ROUTES = [
    ("POST", "/recommend/u1", KEY),
    ("POST", "/feedback", KEY),
    ("PUT", "/admin/features/users/u1", ADMIN_KEY),
    ("POST", "/admin/keys/reload", ADMIN_KEY),
    ("POST", "/no/such/route", KEY),
]


@pytest.fixture
def gateway(make_gateway: Callable[..., Edge]) -> Iterator[tuple[str, int, StandIn]]:
    upstream = StandIn()
    with (
        serve(upstream) as up,
        serve(make_gateway(upstreams=up, max_body_bytes=CAP, body_timeout_s=0.5)) as gw,
    ):
        yield gw, int(gw.rsplit(":", 1)[1]), upstream


def _head(method: str, path: str, key: str, extra: str) -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nhost: x\r\nx-api-key: {key}\r\ncontent-type: application/json\r\n{extra}\r\n"
    ).encode()


def _status(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


@pytest.mark.parametrize(("method", "path", "key"), ROUTES, ids=[p for _, p, _ in ROUTES])
def test_a_chunked_body_past_the_cap_is_413(
    gateway: tuple[str, int, StandIn], method: str, path: str, key: str
) -> None:
    _, port, upstream = gateway
    chunk = b"[" + b"1," * 500 + b"1]"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(_head(method, path, key, "transfer-encoding: chunked\r\n"))
        sent, reply = 0, b""
        try:
            while sent < 64 * CAP:  # keeps sending until the gateway answers and cuts the connection
                s.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                sent += len(chunk)
                # Up to the cap at full speed (the 0.5 s body deadline runs); past it, up to 0.5 s per chunk for the
                # 413: 10 ms per chunk left a starved CI machine ~0.1 s to answer before 4 × CAP had gone.
                s.settimeout(0.01 if sent <= CAP else 0.5)
                try:
                    reply = s.recv(4096)
                except TimeoutError:
                    continue
                if reply:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        s.settimeout(5)
        reply = reply or s.recv(4096)
    assert _status(reply) == 413, reply[:300]
    assert f"request body exceeds {CAP} bytes".encode() in reply
    assert sent <= 4 * CAP  # cut as it streamed, not after reading everything
    assert upstream.hits == []


@pytest.mark.parametrize(("method", "path", "key"), ROUTES, ids=[p for _, p, _ in ROUTES])
def test_a_dripping_body_is_408_at_the_deadline(
    gateway: tuple[str, int, StandIn], method: str, path: str, key: str
) -> None:
    _, port, upstream = gateway
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(_head(method, path, key, "content-length: 100\r\n") + b"{")
        t0 = time.monotonic()
        for _ in range(3):  # one byte every 0.2 s: each arrives before a per-read timeout would fire
            time.sleep(0.2)
            try:
                s.sendall(b" ")
            except (BrokenPipeError, ConnectionResetError):
                break
        reply = s.recv(4096)
        elapsed = time.monotonic() - t0
    assert _status(reply) == 408, reply[:300]
    assert b"not received within 0.5 s" in reply
    # Cut at the 0.5 s deadline; a held connection makes the recv above wait out the socket's 5 s. 4 s, not 2 s,
    # leaves a starved CI machine room between the two.
    assert elapsed < 4, elapsed
    assert upstream.hits == []


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/admin/keys/reload", "POST"),
        ("DELETE", "/admin/features/users/u1", "PUT"),
        ("PUT", "/feedback", "POST"),
        ("GET", "/recommend/u1", "POST"),
        ("POST", "/healthz", "GET"),
    ],
)
def test_a_method_a_path_does_not_have_is_405_before_the_key(
    gateway: tuple[str, int, StandIn], method: str, path: str, allow: str
) -> None:
    """Before the fix: 401 without a key, 403 with a client key on /admin/* (schemathesis, issue 18.8)."""
    gw, _, _ = gateway
    for headers in ({}, {"x-api-key": KEY}, {"x-api-key": ADMIN_KEY}):
        r = requests.request(method, f"{gw}{path}", headers=headers, timeout=5)
        assert (r.status_code, r.headers["allow"]) == (405, allow), (headers, r.text)
        assert r.json()["detail"] == f"method {method} not allowed"


def test_a_client_cannot_name_the_key_id_sent_upstream(gateway: tuple[str, int, StandIn]) -> None:
    gw, _, upstream = gateway
    body = b'{"candidate_restaurant_ids":[1],"latitude":1.0,"longitude":1.0}'
    r = requests.post(
        f"{gw}/recommend/u1", data=body, headers={"x-api-key": KEY, "x-forkcast-key-id": "ops"}, timeout=5
    )
    assert r.status_code == 200
    assert upstream.key_ids == [["user"]]
