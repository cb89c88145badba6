"""``POST /feedback``: a click / no-click on a served recommendation, accepted only from the key it was served to.

Issue 18.1: any key could label any request id, so a client could steer the online AUC that gates canaries. The
request id must verify (request_ids.py) for the caller's key; otherwise 403, counted in
``forkcast_gateway_feedback_total{outcome}`` by why: ``foreign_key`` (minted for another key), ``forged`` (the
shape of an id but no key's tag) or ``malformed``. The Edge applies the route's own, lower per-key rate limit
(FORKCAST_FEEDBACK_RATE_PER_S) before this runs.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from forkcast_gateway.auth import KeyStore
from forkcast_gateway.feedback import FeedbackWriter
from forkcast_gateway.metrics import Metrics
from forkcast_gateway.request_ids import RequestIds, Verdict
from forkcast_gateway.responses import ERRORS, RETRY, documented, error
from forkcast_gateway.schemas import FeedbackAccepted, FeedbackEvent

REFUSALS = {
    Verdict.FOREIGN_KEY: "request_id was issued to another API key",
    Verdict.FORGED: "request_id was not issued by this gateway",
    Verdict.MALFORMED: "request_id is not an id this gateway issues (send back a response's x-request-id)",
}


def router(writer: FeedbackWriter, ids: RequestIds, keys: KeyStore | None, metrics: Metrics) -> APIRouter:
    api = APIRouter()

    @api.post(
        "/feedback",
        status_code=202,
        response_model=FeedbackAccepted,
        responses={
            **ERRORS,
            **documented(
                _403="The request_id was not issued to this API key (foreign, forged or malformed)."
            ),
        },
        summary="Record a click / no-click on a served recommendation",
    )
    async def post_feedback(request: Request, event: FeedbackEvent) -> FeedbackAccepted | JSONResponse:
        key_id: str = request.state.key_id
        others = () if keys is None else (k.key_id for k in keys.keys)
        verdict = ids.verify(event.request_id, key_id, others)
        if verdict is not Verdict.OWN:
            metrics.feedback.labels(verdict.value).inc()
            return error(403, REFUSALS[verdict])
        try:
            entry = await writer.write(event, key_id)
        except (aioredis.RedisError, OSError, TimeoutError) as exc:
            return error(503, f"feedback store unavailable: {type(exc).__name__}", RETRY)
        metrics.feedback.labels("duplicate" if entry is None else "written").inc()
        return FeedbackAccepted(duplicate=entry is None, entry_id=entry)

    return api
