"""A transport wrapper that sends the writes of one event-loop iteration as one write (issue 19.3).

uvicorn writes a response's status line and headers with one ``transport.write`` and its body with another
(uvicorn/protocols/http/httptools_impl.py, ``RequestResponseCycle.send``). On uvloop a write to a socket with nothing
queued is a ``send()`` system call there and then, so every answer left as two TCP segments: two system calls and
two wake-ups of the reader, paid by the server's CPU on loopback. Given to uvicorn's protocol in place of the real
transport (the inference's ``http_protocol.CoalescingProtocol``, the gateway's ``HeaderBoundedProtocol``),
:class:`CoalescingTransport` keeps the writes of one loop iteration and sends them joined at the next one; the head
and the body of an answer are written in the same iteration, so they leave together. Measured on the inference
(`bench_serve.py`, full data, 16 connections, the tree with and without it, alternated, 2026-12-05, 2-core VM):
316 → 284 and 299 → 267 µs of server CPU per request (services/inference/BENCHMARKS.md).

Closing (or half-closing) flushes what is kept first, so a ``connection: close`` answer is still sent whole; an
abort drops it, as the transport's own abort drops its buffer. A client's EOF flushes too (:class:`CoalescingWrites`):
uvloop closes the transport itself when the protocol's ``eof_received`` returns a false value, as uvicorn's does, and
an answer written in the iteration before was lost to a client that half-closed after its request (0-6 of 20 were
answered before this, found in review). Flow control stays the real transport's: the protocol's pause/resume
callbacks and buffer sizes act on it; what is kept is sent at once past :data:`HELD_MAX_BYTES`, so a body streamed
without yielding still meets the transport's high-water mark (and its ``pause_writing``) instead of piling up here.
No dependency on uvicorn: any asyncio protocol that writes through ``self.transport`` can mix it in.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

# Past this many bytes kept, a write goes out at once (the transport's own high-water mark is 64 KiB on uvloop).
HELD_MAX_BYTES: Final = 64 * 1024


class CoalescingTransport:
    """Wraps ``transport``: the writes of one loop iteration go out as one write at the next iteration."""

    __slots__ = ("_held", "_loop", "_out", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._out: list[bytes] = []
        self._held = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._out:
            self._loop.call_soon(self.flush)
        self._out.append(bytes(data))
        self._held += len(data)
        if self._held >= HELD_MAX_BYTES:
            self.flush()

    def flush(self) -> None:
        """Send what is kept now (the scheduled flush then finds nothing)."""
        out, self._out, self._held = self._out, [], 0
        if out and not self._transport.is_closing():
            self._transport.write(out[0] if len(out) == 1 else b"".join(out))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._out, self._held = [], 0
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        # Everything else (is_closing, get_extra_info, pause_reading, set_protocol, ...) is the real transport's.
        return getattr(self._transport, name)


class CoalescingWrites(asyncio.Protocol):
    """Mix in first among a protocol's bases (``class P(CoalescingWrites, HttpToolsProtocol)``): the protocol
    gets a :class:`CoalescingTransport`, and a client's EOF sends what it holds before the transport closes."""

    transport: Any

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(CoalescingTransport(transport, asyncio.get_running_loop()))  # type: ignore[arg-type]

    def eof_received(self) -> Any:  # Any: asyncio's bool | None, and uvicorn's protocol declares None
        if isinstance(self.transport, CoalescingTransport):
            self.transport.flush()
        return super().eof_received()
