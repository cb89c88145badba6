"""Both services send each answer in one write, whole (forkcast_contract.write_coalescing).

A real uvicorn server in a child process serves a two-message ASGI answer (head, then body) with the inference's
protocol (forkcast_inference.http_protocol.CoalescingProtocol), the gateway's (forkcast_gateway.header_bounds), and
for comparison uvicorn's own httptools protocol; the write system calls of the server process (``syscw`` in
/proc/PID/io) are counted over keep-alive requests. uvicorn's protocol makes two per answer, the services' one, so
the test fails if a service stops coalescing.
"""

from __future__ import annotations

import socket
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from forkcast_devservers.ports import free_port
from forkcast_devservers.process import Proc, rss_mib, spawn, stop
from forkcast_devservers.ready import tcp_ok, wait_until

REQUESTS = 300
HALF_CLOSES = 20
# /big: 128 MiB streamed in 64 KiB chunks, each a new bytes object.
BIG_CHUNKS, BIG_CHUNK = 2048, 65536
BODY = b'{"restaurants":[]}'
SERVER = textwrap.dedent(
    """
    import sys
    import uvicorn

    BODY = {body!r}

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body", False):
            pass
        if scope["path"] == "/big":  # a body streamed without yielding: send() waits only when writing is paused
            size = {chunks} * {chunk}
            await send({{"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", str(size).encode())]}})
            for _ in range({chunks}):
                await send({{"type": "http.response.body", "body": b"x" * {chunk}, "more_body": True}})
            await send({{"type": "http.response.body", "body": b""}})
            return
        close = scope["path"] == "/close"
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
        if close:
            headers.append((b"connection", b"close"))
        await send({{"type": "http.response.start", "status": 200, "headers": headers}})
        await send({{"type": "http.response.body", "body": BODY}})

    if sys.argv[2] == "inference":
        from forkcast_inference.http_protocol import CoalescingProtocol as http
    elif sys.argv[2] == "gateway":
        from forkcast_gateway.header_bounds import bounded_protocol
        http = bounded_protocol(16384, 5.0)
    else:
        http = "httptools"
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http=http, lifespan="off",
                access_log=False, log_level="warning")
    """
).format(body=BODY, chunks=BIG_CHUNKS, chunk=BIG_CHUNK)


def _request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


def _read_answer(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(BODY):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _writes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("syscw:"):
            return int(line.split()[1])
    raise AssertionError(f"/proc/{pid}/io has no syscw line")


@pytest.fixture(params=["inference", "gateway", "httptools"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, int, Proc]]:
    port = free_port()
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    proc = spawn([sys.executable, str(script), str(port), request.param], log=tmp_path / "server.log")
    try:
        wait_until(lambda: tcp_ok("127.0.0.1", port), timeout_s=30, what="uvicorn", proc=proc)
        yield request.param, port, proc
    finally:
        stop(proc)


def test_each_answer_is_one_write_with_the_services_protocols_and_two_with_uvicorns(
    server: tuple[str, int, Proc],
) -> None:
    kind, port, proc = server
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(_request("/warm"))
        _read_answer(sock)
        before = _writes(proc.pid)
        for _ in range(REQUESTS):
            sock.sendall(_request("/recommend"))
            answer = _read_answer(sock)
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\n" + BODY), answer
        per_answer = (_writes(proc.pid) - before) / REQUESTS
    if kind != "httptools":
        assert per_answer < 1.2, f"{per_answer:.2f} write calls per answer with the {kind}'s protocol"
    else:  # the comparison that shows the count can tell one write from two
        assert per_answer >= 1.9, f"{per_answer:.2f} write calls per answer with uvicorn's protocol"


def test_a_connection_close_answer_arrives_whole_before_the_close(server: tuple[str, int, Proc]) -> None:
    _, port, _ = server
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(_request("/close"))
        data = b""
        while chunk := sock.recv(65536):  # until the server closes
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"\r\n\r\n" + BODY), data
    assert b"connection: close" in data.lower()


def test_a_client_that_half_closes_after_its_request_still_gets_the_whole_answer(
    server: tuple[str, int, Proc],
) -> None:
    """The client sends its request, then FIN (``nc -N``, ``shutdown(SHUT_WR)``): uvloop closes the transport when
    the protocol's eof_received returns a false value, and an answer still kept by the coalescing transport was lost
    (0-6 of 20 answered before CoalescingWrites flushed on EOF)."""
    kind, port, _ = server
    answered = 0
    for _ in range(HALF_CLOSES):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(_request("/recommend"))
            sock.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        answered += data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"\r\n\r\n" + BODY)
    assert answered == HALF_CLOSES, (
        f"{kind}: {answered} of {HALF_CLOSES} half-closing clients got their answer"
    )


def test_a_body_streamed_to_a_client_that_does_not_read_is_held_back_by_flow_control(
    server: tuple[str, int, Proc],
) -> None:
    """128 MiB streamed to a client that reads nothing for a while: the server must stop at the transport's
    high-water mark (uvicorn's send waits while writing is paused), not keep every chunk in the coalescing
    transport, which never let the transport see them before the next loop iteration."""
    kind, port, proc = server
    size = BIG_CHUNKS * BIG_CHUNK
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        before = rss_mib(proc.pid)
        sock.sendall(_request("/big"))
        time.sleep(1.0)  # the client reads nothing meanwhile: the server fills the socket, then must pause
        grown = rss_mib(proc.pid) - before
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(65536)
        got = len(head.split(b"\r\n\r\n", 1)[1])
        while got < size:
            chunk = sock.recv(1 << 20)
            assert chunk, f"{kind}: the server closed after {got} of {size} bytes"
            got += len(chunk)
    assert got == size
    assert grown < 48, f"{kind}: the server grew {grown:.0f} MiB while the client did not read"
