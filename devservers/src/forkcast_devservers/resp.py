"""The few Redis commands the probes and servers here need (PING, AUTH, INFO, CLUSTER INFO), spoken over a socket.

This package is standard library only, so it cannot use redis-py; it needs one request and one reply at a time, which
RESP2 makes short: a command is an array of bulk strings, a reply is a simple string, error, integer, bulk string or
array (https://redis.io/docs/latest/develop/reference/protocol-spec/). Everything else talks to Redis with redis-py.
"""

from __future__ import annotations

import socket
from typing import BinaryIO

Reply = str | int | bytes | None | list["Reply"]


class RespError(Exception):
    """An error reply (``-ERR ...``, ``-NOAUTH ...``, ``-WRONGPASS ...``) from the server."""


def encode(*args: str | bytes) -> bytes:
    """A command as a RESP array of bulk strings."""
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        out.append(f"${len(data)}\r\n".encode() + data + b"\r\n")
    return b"".join(out)


def _line(f: BinaryIO) -> bytes:
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("connection closed in the middle of a reply")
    return line[:-2]


def decode(f: BinaryIO) -> Reply:
    """Read one reply from the buffered reader ``f``; an error reply raises ``RespError``."""
    line = _line(f)
    kind, rest = line[:1], line[1:]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RespError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        data = f.read(size + 2)
        if len(data) != size + 2:
            raise ConnectionError("connection closed in the middle of a reply")
        return data[:-2]
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [decode(f) for _ in range(count)]
    raise ConnectionError(f"not a RESP reply: {line[:40]!r}")


def command(
    host: str,
    port: int,
    *args: str,
    username: str | None = None,
    password: str | None = None,
    timeout_s: float = 1.0,
) -> Reply:
    """Run one command on a fresh connection (after ``AUTH`` when a password is given) and return its reply."""
    with socket.create_connection((host, port), timeout=timeout_s) as sock, sock.makefile("rb") as f:
        if password is not None:
            auth = ("AUTH", username, password) if username else ("AUTH", password)
            sock.sendall(encode(*auth))
            decode(f)
        sock.sendall(encode(*args))
        return decode(f)


def parse_info(text: bytes | str) -> dict[str, str]:
    """``INFO`` / ``CLUSTER INFO`` text as a dict of its ``key:value`` lines (sections and blanks skipped)."""
    raw = text.decode() if isinstance(text, bytes) else text
    fields = {}
    for line in raw.splitlines():
        if line and not line.startswith("#") and ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value
    return fields
