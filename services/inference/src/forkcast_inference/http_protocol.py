"""uvicorn's httptools protocol with each response sent in one write (issue 19.3).

uvicorn writes a response's status line and headers with one ``transport.write`` and its body with another
(uvicorn/protocols/http/httptools_impl.py, ``RequestResponseCycle.send``). On uvloop a write to a socket with nothing
queued is a ``send()`` system call there and then, so every answer left as two TCP segments: two system calls and
two wake-ups of the reader, paid by the server's CPU on loopback. :class:`CoalescingProtocol` gives uvicorn a
transport that keeps the writes of one event-loop iteration and sends them joined at the next one (the pipelined
Redis connection does the same for commands, forkcast_inference.pipelined). The head and the body of an answer are
written in the same iteration (the app sends both without waiting in between), so they leave together.

Closing flushes what is kept first, so a ``connection: close`` answer is still sent whole; an abort drops it, as
the transport's own abort drops its buffer. Flow control is the transport's: uvicorn's pause/resume callbacks and
buffer sizes act on the real transport, which at most sees each iteration's bytes one iteration later.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _CoalescingTransport:
    """A transport whose writes of one loop iteration go out as one write at the next iteration."""

    __slots__ = ("_loop", "_out", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._out: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._out:
            self._loop.call_soon(self._flush)
        self._out.append(bytes(data))

    def _flush(self) -> None:
        out, self._out = self._out, []
        if out and not self._transport.is_closing():
            self._transport.write(out[0] if len(out) == 1 else b"".join(out))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._out = []
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        # Everything else (is_closing, get_extra_info, pause_reading, ...) is the real transport's.
        return getattr(self._transport, name)


class CoalescingProtocol(HttpToolsProtocol):
    """``uvicorn.run(app, http=CoalescingProtocol)``: uvicorn's httptools protocol, each answer in one write."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
