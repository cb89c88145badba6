"""The JSON access log: one object a line on stdout, encoded by msgspec and written in batches.

Why not a ``logging`` handler (which wrote it until 2026-12-05): ``logger.info(json.dumps(entry))`` cost 43.6 µs
per request in a timeit on the 2-core VM under other agents' load (json.dumps 12.6 µs, the rest the LogRecord,
handler lock, formatter and one write per line) — the largest single piece of the gateway's own CPU per request
after validation. Here a line costs one msgspec encode (≈ 3× cheaper than json.dumps) and a list append; lines are
written together at most ``flush_s`` after the first of them (or at ``max_lines``), one write per batch, and
whatever is buffered is written when the app shuts down. A line is therefore on stdout within ``flush_s`` (0.25 s),
which log shippers do not notice. The object is the same as before: ts, request_id, correlation_id, method, route,
status, ms, key_id, client.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Any, BinaryIO

import msgspec


class AccessLog:
    def __init__(self, stream: BinaryIO | None = None, flush_s: float = 0.25, max_lines: int = 256) -> None:
        self.stream = stream if stream is not None else sys.stdout.buffer
        self.flush_s, self.max_lines = flush_s, max_lines
        self.lines: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None
        self._encode = msgspec.json.Encoder().encode

    def record(self, entry: dict[str, Any]) -> None:
        """Buffer one line; called on the event loop (the Edge, once per request)."""
        self.lines.append(self._encode(entry))
        if len(self.lines) >= self.max_lines:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.flush_s, self.flush)

    def flush(self) -> None:
        """Write every buffered line now (a failing stdout loses the batch, never the request)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.lines:
            return
        batch, self.lines = self.lines, []
        with contextlib.suppress(OSError, ValueError):  # ValueError: the stream was closed
            self.stream.write(b"\n".join(batch) + b"\n")
            self.stream.flush()
