"""``POST /recommend/{user_id}``: check the user id, read the body (bounded in size and time), validate it, forward
the same bytes. One implementation, two ways in:

* :meth:`RecommendRoute.asgi` — plain ASGI, called by the Edge for every ``POST /recommend/<id>`` before FastAPI.
  Why: in a py-spy profile of bench_gateway's closed loop, FastAPI/Starlette routing, the Request object, dependency
  solving and the Response class cost more CPU than the forwarding itself (figures in BENCHMARKS.md).
* :meth:`RecommendRoute.process` from the FastAPI route in app.py, which is what /openapi.json and /docs document
  (and what serves the route when the app runs without the Edge).

The body is validated with pydantic-core's JSON parser in one pass (``model_validate_json``: no intermediate dict,
≈ 3x cheaper than json.loads + validate for 1,000 ids); 422 bodies have the shape of the FastAPI routes' 422s.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from pydantic import BaseModel, ValidationError

from forkcast_contract.api import USER_ID_PATTERN
from forkcast_gateway.forwarding import Forwarder, Unavailable

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

PREFIX = "/recommend/"
_USER_ID = re.compile(USER_ID_PATTERN)
_JSON = (b"content-type", b"application/json")
RETRY = (b"retry-after", b"1")


def field_errors(errs: list[Any]) -> list[dict[str, str]]:
    return [
        {
            # FastAPI locates a JSON syntax error at ("body", <char offset>): the offset is not a field name.
            "field": "body"
            if e["type"] == "json_invalid"
            else ".".join(str(p) for p in e["loc"] if p not in ("body", "path")) or "body",
            "rule": e["type"],
            "message": e["msg"],
        }
        for e in errs
    ]


def body_422(items: list[dict[str, str]]) -> bytes:
    detail = "; ".join(f"{i['field']}: {i['message']} ({i['rule']})" for i in items[:5])
    return json.dumps({"detail": detail, "errors": items}).encode()


def error_body(detail: str) -> bytes:
    return json.dumps({"detail": detail, "errors": []}).encode()


class BodyError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


async def receive_body(receive: Receive, limit: int, timeout_s: float) -> bytes:
    """The whole body, or BodyError: 413 past ``limit`` bytes, 408 when it trickles in slower than ``timeout_s``
    (slowloris: the connection is not held open at the client's pace)."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise BodyError(400, "client disconnected before the body was complete")
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise BodyError(413, f"request body exceeds {limit} bytes")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        raise BodyError(408, f"request body not received within {timeout_s} s") from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class RecommendRoute:
    def __init__(
        self, model: type[BaseModel], forwarder: Forwarder, max_body_bytes: int, body_timeout_s: float
    ) -> None:
        self.model, self.forwarder = model, forwarder
        self.max_body_bytes, self.body_timeout_s = max_body_bytes, body_timeout_s

    @staticmethod
    def user_of(scope: Scope) -> str | None:
        """The path's user segment when this is ``POST /recommend/<one segment>``; None: let FastAPI answer
        (405 for another method, 404 for another path shape)."""
        path: str = scope["path"]
        if scope["method"] != "POST" or not path.startswith(PREFIX):
            return None
        user = path[len(PREFIX) :]
        return user if user and "/" not in user else None

    async def process(self, user_text: str, body: bytes, request_id: str) -> tuple[int, bytes, Headers]:
        """Validate and forward; (status, body, headers) of the answer (content-type included)."""
        try:
            self.model.model_validate_json(body)
        except ValidationError as exc:
            return 422, body_422(field_errors(list(exc.errors(include_url=False)))), [_JSON]
        try:
            reply = await self.forwarder.recommend(user_text, body, request_id)
        except Unavailable as exc:
            return 503, error_body(exc.reason), [_JSON, RETRY]
        if reply.status >= 500 and reply.status != 503:
            return 502, error_body(f"upstream error {reply.status}"), [_JSON]
        return reply.status, reply.body, reply.headers

    async def asgi(self, scope: Scope, receive: Receive, send: Send, user_text: str) -> None:
        if _USER_ID.fullmatch(user_text) is None:
            item = {
                "field": "user_id",
                "rule": "string_pattern_mismatch",
                "message": f"String should match pattern '{USER_ID_PATTERN}'",
            }
            status, body, headers = 422, body_422([item]), [_JSON]
        else:
            try:
                raw = await receive_body(receive, self.max_body_bytes, self.body_timeout_s)
            except BodyError as exc:
                status, body, headers = exc.status, error_body(str(exc)), [_JSON]
            else:
                status, body, headers = await self.process(user_text, raw, scope["state"]["request_id"])
        headers = [*headers, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
