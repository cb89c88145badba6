"""``POST /recommend/{user_id}``: check the user id, validate the body, forward it. One implementation, two ways in:

* :meth:`RecommendRoute.asgi` — plain ASGI, called by the Edge for every ``POST /recommend/<id>`` before FastAPI.
  Why: in a py-spy profile of bench_gateway's closed loop, FastAPI/Starlette routing, the Request object, dependency
  solving and the Response class cost more CPU than the forwarding itself (figures in BENCHMARKS.md).
* :meth:`RecommendRoute.process` from the FastAPI route of :func:`router`, which is what /openapi.json and /docs
  document (and what serves the route when the app runs without the Edge).

The body is checked by msgspec first (validation.FastCheck: ≈ half the CPU of pydantic on 1,000 ids); a body it
refuses is judged by the pydantic model with pydantic-core's JSON parser in one pass (``model_validate_json``: no
intermediate dict, ≈ 3x cheaper than json.loads + validate), whose errors make the 422 — the shape of the FastAPI
routes' 422s.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from forkcast_contract.api import USER_ID_PATTERN
from forkcast_contract.asgi_body import BodyError, receive_body
from forkcast_gateway.forwarding import Forwarder, Unavailable
from forkcast_gateway.responses import ERRORS, body_422, documented, error_body, field_errors
from forkcast_gateway.schemas import RecommendResponse
from forkcast_gateway.validation import FastCheck

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

PREFIX = "/recommend/"
_USER_ID = re.compile(USER_ID_PATTERN)
_JSON = (b"content-type", b"application/json")
RETRY = (b"retry-after", b"1")


def integral_floats(body: bytes, errors: list[Any]) -> Any | None:
    """The body parsed with every integral float that a strict int field refused turned into an int, or None when
    no such error is among ``errors``.

    Why: JSON Schema counts 1.0 as an integer ("Understanding JSON Schema", Numeric types; the JSON-Schema-Test-
    Suite's zeroTerminatedFloats case), so the published ``size: integer`` admits 1.0, and schemathesis found the
    server refusing it (issue 18.8). Lax ints would take "1" as well, which the schema refuses; so the strict pass
    stays the hot path and this one only runs on a body it refused, at the locations it names.
    """
    spots = [
        e["loc"]
        for e in errors
        if e["type"] == "int_type" and isinstance(e["input"], float) and e["input"].is_integer()
    ]
    if not spots:
        return None
    data = json.loads(body)
    for loc in spots:
        node = data
        for step in loc[:-1]:
            node = node[step]
        node[loc[-1]] = int(node[loc[-1]])
    return data


class RecommendRoute:
    def __init__(
        self,
        model: type[BaseModel],
        forwarder: Forwarder,
        max_body_bytes: int,
        body_timeout_s: float,
        max_candidates: int,
    ) -> None:
        self.model, self.forwarder = model, forwarder
        self.fast = FastCheck(max_candidates)
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

    def validate(self, body: bytes) -> tuple[bytes, list[Any]]:
        """(the bytes to forward, the validation errors): the body itself when it is valid as sent; re-encoded
        when it was valid only once its integral floats became ints (the inference service takes ints only)."""
        if self.fast.accepts(body):
            return body, []
        try:
            self.model.model_validate_json(body)
        except ValidationError as exc:
            errors = list(exc.errors(include_url=False))
            fixed = integral_floats(body, errors)
            if fixed is None:
                return body, errors
            try:
                self.model.model_validate(fixed)
            except ValidationError as again:
                return body, list(again.errors(include_url=False))
            return json.dumps(fixed, separators=(",", ":")).encode(), []
        return body, []

    async def process(
        self, user_text: str, body: bytes, request_id: str, key_id: str
    ) -> tuple[int, bytes, Headers]:
        """Validate and forward; (status, body, headers) of the answer (content-type included)."""
        body, errors = self.validate(body)
        if errors:
            return 422, body_422(field_errors(errors)), [_JSON]
        try:
            reply = await self.forwarder.recommend(user_text, body, request_id, key_id)
        except Unavailable as exc:
            return 503, error_body(exc.reason), [_JSON, RETRY]
        if reply.status >= 500 and reply.status != 503:
            return 502, error_body(f"upstream error {reply.status}"), [_JSON]
        return reply.status, reply.body, reply.headers

    async def asgi(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        user_text: str,
        extra: Sequence[tuple[bytes, bytes]] = (),
    ) -> int:
        """Serve the request; its status. ``extra``: headers added to the answer (the Edge's request-id headers)."""
        state = scope["state"]
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
                status, body, headers = exc.status, error_body(str(exc)), [_JSON, (b"connection", b"close")]
            else:
                status, body, headers = await self.process(
                    user_text, raw, state["request_id"], state["key_id"]
                )
        headers = [*headers, (b"content-length", str(len(body)).encode()), *extra]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return status


def router(route: RecommendRoute) -> APIRouter:
    """The documented form of the route (the Edge serves ``POST /recommend/<id>`` through ``route.asgi``)."""
    api = APIRouter()

    @api.post(
        "/recommend/{user_id}",
        response_model=RecommendResponse,
        responses={**ERRORS, **documented(_404="Unknown user.")},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": route.model.model_json_schema()}},
            }
        },
        summary="Rank candidate restaurants for a user",
    )
    async def recommend(
        request: Request,
        user_id: Annotated[
            str,
            Path(pattern=USER_ID_PATTERN, description="`u` + digits or bare digits.", examples=["u00042"]),
        ],
    ) -> Response:
        try:
            body = await receive_body(request.receive, route.max_body_bytes, route.body_timeout_s)
        except BodyError as exc:
            return Response(error_body(str(exc)), exc.status, media_type="application/json")
        state = request.state
        status, payload, headers = await route.process(user_id, body, state.request_id, state.key_id)
        return Response(payload, status_code=status, headers={k.decode(): v.decode() for k, v in headers})

    return api
