"""A size cap and a deadline for the header section of every request (issue 18.4/18.7: slowloris and header bombs).

uvicorn bounds neither: it has no timeout while a request's headers arrive (``timeout_keep_alive`` covers only the
idle time between requests; github.com/Kludex/uvicorn issue #157) and its httptools parser buffers a header of any
size (httptools concatenates a header name or value across reads until it is complete). The body is bounded one
layer up, in the ASGI Edge (body.py); the header section has to be bounded here, in the HTTP protocol, because no
ASGI app runs before it is complete.

:class:`HeaderBoundedProtocol` is uvicorn's httptools protocol with two additions (and each answer sent in one write,
forkcast_contract.write_coalescing, as the inference's protocol does):

* **Deadline.** The header section must be complete ``header_timeout_s`` after the connection opened (first
  request) or after its first byte arrived (each later request on a keep-alive connection, so the deadline restarts
  per request). Past it: 408 Request Timeout (RFC 9110 §15.5.9) and close when bytes of a request were held, a
  plain close when the connection never began one. nginx's ``client_header_timeout`` is the same rule (ingress-nginx
  ConfigMap ``client-header-timeout``, default 60 s, docs/user-guide/nginx-configuration/configmap.md).
* **Size.** The header section (request line + header lines) may hold ``max_header_bytes``; past it: 431 Request
  Header Fields Too Large (RFC 6585 §5) and close. While the section is incomplete every byte received since it
  began counts, so a bomb is cut after at most ``max_header_bytes`` + one read (uvloop reads up to 256,000 bytes,
  UV_STREAM_RECV_BUF_SIZE in uvloop/includes/consts.pxi), never buffered whole; a complete section is measured
  exactly (request line and ``name: value`` lines as sent, the parsed form) when the bytes received could exceed
  the cap. A request pipelined behind another in the same read is counted from the next read
  (where it starts inside that read is not known) and measured exactly when complete.

A refusal answers only when no response is in flight on the connection (else pipelined responses would
interleave): then it writes the answer, half-closes, and reads and discards what the client still sends until the
client closes or :data:`LINGER_S` passes, so a client still sending its bomb reads the 431 instead of a reset
(closing with unread bytes sends a TCP RST; nginx's ``lingering_close`` does the same). With a response in flight
the connection closes after that response instead.

Hot path: per read a few integer operations and one comparison; per request one ``loop.time()`` and three
overridden parser callbacks. The per-connection timer is armed once and re-armed only when it fires during an open
header section, never cancelled and re-created per request. benchmarks/bench_header_bounds.py (a keep-alive
``POST /recommend`` of 1,000 candidates, 6,280 bytes, fed to the protocol on uvloop), two runs: ``data_received``
10.4 / 10.7 µs per request with uvicorn's protocol, 12.0 / 12.3 µs with this one, +1.6 / +1.7 µs — about 0.2 % of
the gateway's 771 µs of CPU per request (BENCHMARKS.md, same 2-core VM).
"""

from __future__ import annotations

import asyncio
import json
import logging
from asyncio import TimerHandle
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from forkcast_contract.write_coalescing import CoalescingWrites
from forkcast_gateway.settings import MAX_HEADER_BYTES_DEFAULT

logger = logging.getLogger("forkcast_gateway.header_bounds")

# How long a refused connection keeps reading (and discarding) before it closes; see the module docstring.
LINGER_S = 2.0


class _HeaderSectionTooLargeError(Exception):
    """Raised inside the parser's on_headers_complete: stops httptools at once (no body callbacks follow)."""


class HeaderBoundedProtocol(CoalescingWrites, HttpToolsProtocol):
    """uvicorn's httptools protocol with a header-section deadline (408) and size cap (431); see the module."""

    max_header_bytes: ClassVar[int] = MAX_HEADER_BYTES_DEFAULT
    header_timeout_s: ClassVar[float] = 5.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fed = 0  # bytes given to the parser on this connection
        self._chunk_start = 0  # _fed before the current read
        self._head_from = 0  # _fed where the current header section is counted from
        self._head_exact = True  # False: pipelined behind another message in the read where it began
        self._clean_read = True  # no message bytes precede the current read's first byte
        self._in_message = False  # between on_message_begin and on_message_complete
        self._in_head = False  # between on_message_begin and on_headers_complete
        self._head_since: float | None = None  # when the current wait for a header section began
        self._head_timer: TimerHandle | None = None
        self._refused = False

    # -- connection ---------------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # CoalescingWrites: each answer's head and body in one write
        self._head_since = self.loop.time()  # the first request's deadline runs from the connection's start
        self._arm(self.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """uvicorn 0.54's HttpToolsProtocol.data_received, plus the byte count and the 431 from on_headers_complete."""
        if self._refused:  # lingering after a refusal: read and discard
            return
        self._unset_keepalive_if_required()
        self._chunk_start = self._fed
        self._fed += len(data)
        self._clean_read = not self._in_message
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _HeaderSectionTooLargeError):
                self._refuse(431, str(exc.__context__))
                return
            self._invalid()
            return
        except httptools.HttpParserError:
            self._invalid()
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._in_head and self._fed - self._head_from > self.max_header_bytes:
            self._refuse(431, f"request header section exceeds {self.max_header_bytes} bytes")

    def _invalid(self) -> None:
        msg = "Invalid HTTP request received."
        self.logger.warning(msg)
        self.send_400_response(msg)

    # -- parser callbacks ---------------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._in_message = self._in_head = True
        if self._clean_read:
            self._head_from, self._head_exact = self._chunk_start, True
        else:  # behind another message in this read: its share of the read is unknown, count from the next one
            self._head_from, self._head_exact = self._fed, False
        if self._head_since is None:
            self._head_since = self.loop.time()
            if self._head_timer is None:
                self._arm(self.header_timeout_s)
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        if not self._head_exact or self._fed - self._head_from > self.max_header_bytes:
            size = self._section_size()
            if size > self.max_header_bytes:
                raise _HeaderSectionTooLargeError(
                    f"request header section exceeds {self.max_header_bytes} bytes"
                )
        self._in_head = False
        self._head_since = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_message = False
        self._clean_read = False  # a message ended inside this read: the next one begins mid-read
        super().on_message_complete()

    def _section_size(self) -> int:
        """The header section as sent in canonical form: ``METHOD SP target SP HTTP/x.y CRLF``, one ``name: value
        CRLF`` per header, the final CRLF."""
        size = len(self.parser.get_method()) + len(self.url) + 12
        for name, value in self.headers:
            size += len(name) + len(value) + 4
        return size + 2

    # -- deadline -----------------------------------------------------------------------------------------------
    def _arm(self, delay_s: float) -> None:
        self._head_timer = self.loop.call_later(delay_s, self._deadline)

    def _deadline(self) -> None:
        self._head_timer = None
        if self._head_since is None or self.transport.is_closing():
            return  # no header section awaited: the next request's first byte re-arms
        left = self._head_since + self.header_timeout_s - self.loop.time()
        if left > 0:
            self._arm(left)
        elif self._in_head:
            self._refuse(408, f"request header section not received within {self.header_timeout_s} s")
        else:  # connected and never began a request
            self.transport.close()

    # -- refusal ------------------------------------------------------------------------------------------------
    def _refuse(self, status: int, detail: str) -> None:
        self._refused, self._head_since = True, None
        logger.info("%s %d %s", self.client, status, detail)
        if self.cycle is not None and not self.cycle.response_complete:
            # A response is being written: no answer of ours may interleave with it. Close after it.
            self.cycle.keep_alive = False
            return
        body = json.dumps({"detail": detail, "errors": []}).encode()
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(body)).encode() + b"\r\n",
                b"connection: close\r\n\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(content))
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_S, self.transport.close)
        else:
            self.transport.close()


def bounded_protocol(max_header_bytes: int, header_timeout_s: float) -> type[HeaderBoundedProtocol]:
    """The protocol class to pass as ``uvicorn.run(..., http=…)`` (uvicorn.Config takes a protocol class there and
    instantiates it per connection), with these bounds."""
    return type(
        "HeaderBoundedProtocol",
        (HeaderBoundedProtocol,),
        {"max_header_bytes": max_header_bytes, "header_timeout_s": header_timeout_s},
    )
