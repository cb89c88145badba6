"""The floor server of `bench_serve.py` (issue 19.3): the service's HTTP stack and Redis round trip, nothing else.

Same server (uvicorn, uvloop, the service's httptools protocol: forkcast_inference.http_protocol, one raw ASGI
callable), same body reading, and per request the same MGET the service sends — the same keys (pointer, revision,
user, in-range restaurants), pre-encoded, on the same Redis client: the service reader's own pipelined asyncio
connection (forkcast_inference.pipelined), so the ratio compares like with like — then a canned answer of the
service's shape. What it skips is exactly the service's own work: JSON parsing and validation, the distance filter,
scoring, sorting, encoding the answer, events and metrics. The MGET of each workload request is computed once at
start with the service's own reader and selection, so the floor's keys are the service's keys by construction.

With ``--contract-work`` it is the *contract floor*: the floor plus the work SPEC §6 asks of any implementation
whatever its ranking — the request id (the service's own ``_request_id``), the body decoded and validated with the
contract's Struct (``parse_request``, the gateway's check too) and the user id parsed, the answer's model version,
feature version and request id headers, and the prediction event logged through the service's ``EventSink`` (an
event of the canned answer's ids and scores, flushed to the events stream as the service flushes). The service's
ratio to the floor is then split into what the contract costs and what the ranking (array, distance filter,
scoring, sort, answer) costs.

Run: ``python floor_app.py --port P --requests FILE [--contract-work]`` (FILE: JSON lines ``[path, body]``) with the
service's environment (REDIS_URL, FORKCAST_FEATURE_PREFIX, …).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import uvicorn

from forkcast_inference.api import parse_request, parse_user_id
from forkcast_inference.app import InferenceApp
from forkcast_inference.events import Event, EventSink
from forkcast_inference.features import FeatureReader, MgetWire, connect
from forkcast_inference.http_protocol import CoalescingProtocol
from forkcast_inference.metrics import Metrics
from forkcast_inference.ranking import select_in_range
from forkcast_inference.settings import get_settings

Message = MutableMapping[str, Any]
# An answer of the service's shape and typical size (20 restaurants).
CANNED_IDS = [10_000 + i for i in range(20)]
CANNED_SCORES = [0.987654321 - i / 97 for i in range(20)]
CANNED = json.dumps(
    {
        "restaurants": [
            {"id": i, "score": s, "displacement": 1234.5678 + n}
            for n, (i, s) in enumerate(zip(CANNED_IDS, CANNED_SCORES, strict=True))
        ]
    }
).encode()
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(CANNED)).encode())]
MISS = [(b"content-type", b"application/json"), (b"content-length", b"2")]
# A model version of the registry's shape (the contract floor's events and headers carry one).
MODEL_VERSION = "20261205T110000Z-0123abcd"


class FloorApp:
    """ASGI: ``POST /recommend/…`` of a known request → its MGET, then the canned body; ``GET /readyz`` → 200."""

    def __init__(self, requests: Path, contract_work: bool) -> None:
        settings = self.settings = get_settings()
        self.reader = FeatureReader(
            connect(settings.redis_url, settings.redis_timeout_s),
            settings.feature_prefix,
            settings.redis_timeout_s,
        )
        state = self.reader.current()
        wire = MgetWire.of(self.reader.pointer, state.keys, state.meta.restaurants)
        self.commands: dict[tuple[str, bytes], bytes] = {}
        for line in requests.read_text().splitlines():
            path, body = json.loads(line)
            req = parse_request(body.encode(), settings.max_candidates)
            ids = np.array(req.candidate_restaurant_ids, dtype=np.int64)
            sel = select_in_range(state, ids, req.latitude, req.longitude, req.max_dist)
            user = parse_user_id(path.removeprefix("/recommend/"))
            self.commands[(path, body.encode())] = wire.mget(user, sel.ids.tolist())
        self.pipe = self.reader.pipe  # the service's hot-path connection, as the service uses it
        self.version = state.keys.version
        self.events: EventSink | None = None
        if contract_work:  # the service's sink, on the service's events Redis and stream
            self.events = EventSink(
                connect(settings.events_url, settings.redis_timeout_s),
                settings.events_stream,
                settings.events_maxlen,
                settings.events_buffer,
                Metrics(),
            )

    async def __call__(
        self,
        scope: Message,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                if self.events is not None:
                    self.events.start(self.settings.events_flush_s)
                await send({"type": "lifespan.startup.complete"})
            if self.events is not None:
                await self.events.stop()
            await send({"type": "lifespan.shutdown.complete"})
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        command = self.commands.get((scope["path"], body))
        if command is None:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200 if scope["method"] == "GET" else 404,
                    "headers": MISS,
                }
            )
            await send({"type": "http.response.body", "body": b"{}"})
            return
        headers = HEADERS
        if self.events is None:
            await self.pipe.execute(command)
        else:
            headers = await self._contract_work(scope, body, command)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": CANNED})

    async def _contract_work(self, scope: Message, body: bytes, command: bytes) -> list[tuple[bytes, bytes]]:
        """The contract floor's request: id, decode and validate, the MGET, the event, the answer's headers (SPEC
        §6: the model and feature versions and the request id, as the service sends them); no ranking."""
        assert self.events is not None
        rid, key_id = InferenceApp._request_id(scope)
        user = parse_user_id(scope["path"].removeprefix("/recommend/"))
        parse_request(body, self.settings.max_candidates)
        await self.pipe.execute(command)
        self.events.add(
            Event(rid, time.time(), user, MODEL_VERSION, self.version, CANNED_IDS, CANNED_SCORES, key_id)
        )
        return [
            HEADERS[0],
            (b"x-model-version", MODEL_VERSION.encode()),
            (b"x-feature-version", self.version.encode()),
            (b"x-request-id", rid.encode()),
            HEADERS[1],
        ]


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--requests", type=Path, required=True)
    p.add_argument("--contract-work", action="store_true", help="also the work the contract asks (see above)")
    a = p.parse_args()
    uvicorn.run(
        FloorApp(a.requests, a.contract_work),
        host="127.0.0.1",
        port=a.port,
        access_log=False,
        log_level="warning",
        loop="uvloop",
        http=CoalescingProtocol,  # the service's own protocol (forkcast_inference.main)
        lifespan="on",
    )
