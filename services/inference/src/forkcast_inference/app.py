"""The inference service as a lean ASGI app on uvicorn: ``create_app(settings)``.

Why not FastAPI (the named stack): on this hot path FastAPI + pydantic cost +110-170 µs of CPU per request in the
issue's prototype, and `bench-serve` measures this app against a FastAPI baseline in the same run (BENCHMARKS.md).
The routes are few and fixed, so a plain ASGI callable is short and easy to read.

A request's feature reads are awaited on the worker's pipelined asyncio connection (forkcast_inference.pipelined;
one per node on a Redis Cluster): the loop serves other requests during the round trip and concurrent reads share
socket calls. /readyz runs its check (the readers' blocking ``current``) in a worker thread, one check at a time
per worker (``check_readiness``); start calls Redis synchronously before serving, and a version change a request
meets is reloaded on the loop (rare); a Cluster's slot map is read again in a worker thread
(forkcast_inference.cluster_features). Every call is bounded by FORKCAST_REDIS_TIMEOUT_S, so a stalled Redis costs at
most that before the 503.

Request ids (issue 18.1): the gateway mints them and sends its id as X-Request-ID with the caller's key id as
X-Forkcast-Key-Id; the prediction event records both. The service holds no MAC key, so it takes an X-Request-ID
only in the shape of a minted id (forkcast_contract.api.REQUEST_ID_PATTERN) and otherwise — a direct call — mints
an id of its own (128 random bits, no tag, so the gateway's /feedback never accepts it) with key id NO_KEY_ID: a
direct caller's own id never becomes an event's request id. Only the gateway can reach the service (its
NetworkPolicy), so an id of that shape comes from the gateway.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import asdict
from typing import Any

import msgspec
import numpy as np
import redis
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from forkcast_contract.api import HEADER_KEY_ID, HEADER_REQUEST_ID, KEY_ID_PATTERN, REQUEST_ID_PATTERN
from forkcast_contract.asgi_body import BodyError, receive_body
from forkcast_contract.registry_format import version_time
from forkcast_contract.streams import NO_KEY_ID
from forkcast_inference.api import (
    BadRequestError,
    Recommendation,
    Recommended,
    parse_request,
    parse_user_id,
)
from forkcast_inference.events import Event, EventSink
from forkcast_inference.features import (
    CorruptUserError,
    FeatureSource,
    NoLiveVersionError,
    VersionState,
    connect,
)
from forkcast_inference.metrics import Metrics
from forkcast_inference.model import LoadedModel, ModelLoadError, load_model
from forkcast_inference.ranking import Selection, rank, select_in_range, warm_up
from forkcast_inference.settings import InferenceSettings
from forkcast_inference.sources import open_feature_source

log = logging.getLogger("forkcast_inference")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

_JSON = (b"content-type", b"application/json")
_RETRY = (b"retry-after", b"1")
_encode = msgspec.json.encode
_MINTED_ID = re.compile(REQUEST_ID_PATTERN.encode())
_KEY_ID = re.compile(KEY_ID_PATTERN.encode())
_RID_HEADER, _KEY_HEADER = HEADER_REQUEST_ID.encode(), HEADER_KEY_ID.encode()


class UnavailableError(Exception):
    """Answered 503 with Retry-After; ``cause`` is the errors metric label."""

    def __init__(self, cause: str, detail: str) -> None:
        super().__init__(detail)
        self.cause = cause


class InferenceApp:
    """ASGI callable; ``startup`` loads the model and the live feature version (also called by lifespan)."""

    def __init__(self, settings: InferenceSettings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.redis = connect(settings.redis_url, settings.redis_timeout_s)
        self.reader: FeatureSource = open_feature_source(settings)
        events = (
            self.redis
            if settings.events_url == settings.redis_url
            else connect(settings.events_url, settings.redis_timeout_s)
        )
        self.events = EventSink(
            events, settings.events_stream, settings.events_maxlen, settings.events_buffer, self.metrics
        )
        self.model: LoadedModel | None = None
        self.model_error = "not started"
        self.started_at = time.monotonic()
        self.ready_after_s: float | None = None
        self.warmed_up = False
        # The readiness check in flight (``check_readiness``): concurrent probes await this one.
        self._checking: asyncio.Task[tuple[bool, str]] | None = None

    # -- life cycle ------------------------------------------------------------------------------------------
    def startup(self) -> None:
        self._load_model()
        ok, reason = self.readiness()
        if ok:
            self.ready_after_s = time.monotonic() - self.started_at
        log.info("ready=%s %s", ok, reason)

    def _load_model(self) -> bool:
        try:
            model = load_model(self.settings)
        except ModelLoadError as exc:
            self.model_error = str(exc)
            log.error("not serving: %s", exc)
            return False
        self.model, self.model_error = model, ""
        log.info(
            "model %s ready (probe max |Δlogit| %.2e)",
            model.provenance.model_version,
            model.probe_max_abs_diff,
        )
        return True

    async def retry_model(self) -> None:
        """Load the model again, backing off, until it loads.

        Why: a replica started while S3 was down stayed unready for ever once S3 was back (the fault drill), and
        its /healthz answered 200, so no liveness probe restarted it. A bad version keeps failing verification
        here, as often as the backoff allows, and never serves.
        """
        delay = 1.0
        while self.model is None:
            await asyncio.sleep(delay)
            if await asyncio.to_thread(self._load_model):
                began = self._checking
                if began is not None and not began.done():
                    await asyncio.wait([began])  # began before the model loaded: its answer is out of date
                ok, reason = await self.check_readiness()
                if ok and self.ready_after_s is None:
                    self.ready_after_s = time.monotonic() - self.started_at
                log.info("model loaded on retry; ready=%s %s", ok, reason)
            delay = min(2 * delay, self.settings.model_retry_max_s)

    def readiness(self) -> tuple[bool, str]:
        """Ready: model verified, feature pointer resolves, schema hashes agree. Blocking: start (before serving)."""
        return self._publish(*self._check())

    async def check_readiness(self) -> tuple[bool, str]:
        """``readiness`` for /readyz and a model retry: the check in a worker thread, one in flight per worker.

        Why off the loop: the check calls Redis through the readers' blocking clients; on the loop a stalled Redis
        froze the worker, /healthz and every in-flight /recommend with it, for the whole check (up to
        FORKCAST_REDIS_TIMEOUT_S per call it makes: 2.06 s of /healthz behind a 2 s CLIENT PAUSE,
        test_readyz_off_loop). Why one: each kubelet probe would otherwise hold a thread of the default pool, which
        the Cluster reader's slot-map read also needs; concurrent probes await the check in flight and get its
        answer. The gauges and info are written on the loop once the thread is done (``_publish``), so a scrape
        never sees the offline-AUC series between its clear and its set.
        """
        loop = asyncio.get_running_loop()
        task = self._checking
        if task is None or task.done() or task.get_loop() is not loop:
            task = self._checking = loop.create_task(self._check_off_loop())
            # A check whose every caller left (cancelled) still has its exception, if any, marked retrieved.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        # One caller's cancellation (a client gone) must not cancel the check the others await.
        return await asyncio.shield(task)

    async def _check_off_loop(self) -> tuple[bool, str]:
        return self._publish(*await asyncio.to_thread(self._check))

    def _check(self) -> tuple[bool, str, VersionState | None]:
        """(ready, why, the live state when ready); writes no metric, so it may run in a worker thread.

        From a thread it touches: the model (replaced whole by ``_load_model``, never changed in place); the
        reader's ``current``: redis-py's clients are thread-safe, and a version ``FeatureReader`` loads is built
        whole and then swapped in, as a request's reload on the loop does (each request checks the version of every
        read it makes); and ``warm_up`` (numpy, reading that state). ``check_readiness`` runs one at a time, so
        ``warmed_up`` has one writer. ``ClusterFeatureReader.current`` hands a stale slot map's read to the loop
        it serves on (the read's follow-up closes connections only that loop may touch) and publishes a version it
        loads whole, with its copies.
        """
        model = self.model
        if model is None:
            return False, f"model: {self.model_error}", None
        try:
            state = self.reader.current()
        except NoLiveVersionError as exc:
            return False, f"features: {exc}", None
        except redis.RedisError as exc:
            return False, f"redis: {exc}", None
        except Exception as exc:  # a RedisClusterException (not a RedisError) mid-failover, a corrupt version
            log.exception("readiness check failed")
            return False, f"check failed: {type(exc).__name__}: {exc}", None
        want = model.provenance.feature_schema_hash
        if state.meta.feature_schema_hash != want:
            reason = (
                f"feature version {state.keys.version} has schema {state.meta.feature_schema_hash},"
                f" the model needs {want}"
            )
            return False, reason, None
        if not self.warmed_up:
            warm_up(model.folded, state)
            self.warmed_up = True
        return True, f"feature version {state.keys.version}", state

    def _publish(self, ok: bool, reason: str, state: VersionState | None) -> tuple[bool, str]:
        """The readiness gauge and, when ready, the served versions: on the loop (or at start), after ``_check``."""
        if state is not None:
            self._publish_info(state)
        self.metrics.ready.set(1 if ok else 0)
        return ok, reason

    def _publish_info(self, state: VersionState) -> None:
        assert self.model is not None
        provenance = self.model.provenance
        # The offline AUC is a value, not an identity: a gauge of its own rather than a label of the info metric.
        info = {k: str(v) for k, v in asdict(provenance).items() if k != "offline_auc"}
        info["feature_version"] = state.keys.version
        self.metrics.served.info(info)
        published = version_time(provenance.model_version)
        if published is not None:
            self.metrics.model_published.set(published)
        self.metrics.model_offline_auc.clear()
        if provenance.offline_auc is not None:
            self.metrics.model_offline_auc.labels(provenance.model_version).set(provenance.offline_auc)

    def version_info(self) -> dict[str, Any]:
        state = self.reader.state
        info: dict[str, Any] = (
            asdict(self.model.provenance) if self.model else {"model_error": self.model_error}
        )
        info["feature_version"] = state.keys.version if state else None
        info["startup_to_ready_s"] = self.ready_after_s
        return info

    # -- the hot path ----------------------------------------------------------------------------------------
    async def recommend(
        self, user_text: str, body: bytes, rid: str, key_id: str = NO_KEY_ID
    ) -> tuple[int, bytes, Headers]:
        m = self.metrics
        model = self.model
        if model is None:
            raise UnavailableError("not_ready", f"model not loaded: {self.model_error}")
        user_id = parse_user_id(user_text)
        req = parse_request(body, self.settings.max_candidates)
        t0 = time.perf_counter()  # parsing is in the request histogram, not in a stage
        ids_in = req.candidate_restaurant_ids
        # np.fromiter: 18 µs for 1,000 ids where np.array took 25 µs (2026-12-05, docs/benchmarks.md).
        candidates = np.fromiter(ids_in, dtype=np.int64, count=len(ids_in))
        lat, lng, max_dist = req.latitude, req.longitude, req.max_dist
        chosen: list[Selection] = []
        geo_s = 0.0

        def select(state: VersionState) -> Any:
            nonlocal geo_s
            g = time.perf_counter()
            sel = select_in_range(state, candidates, lat, lng, max_dist)
            chosen.append(sel)
            geo_s += time.perf_counter() - g
            return sel.ids

        try:
            fetched = await self.reader.fetch(user_id, select)
        except redis.RedisError as exc:
            raise UnavailableError(
                "redis_unavailable", f"feature store unavailable: {type(exc).__name__}"
            ) from exc
        except NoLiveVersionError as exc:
            raise UnavailableError("no_feature_version", str(exc)) from exc
        t1 = time.perf_counter()
        headers: Headers = [
            _JSON,
            (b"x-model-version", model.provenance.model_version.encode()),
            (b"x-feature-version", fetched.version.encode()),
        ]
        if fetched.schema_hash != model.provenance.feature_schema_hash:
            raise UnavailableError(
                "schema_mismatch", f"feature version {fetched.version} has another feature schema"
            )
        if fetched.user is None:
            m.errors["unknown_user"].inc()
            return 404, _encode({"detail": f"unknown user {user_text}"}), headers
        sel = chosen[-1]
        ranked = rank(model.folded, fetched.user, sel, fetched.values, req.size, req.sort_dist)
        t2 = time.perf_counter()
        ids, scores, disp = ranked.ids.tolist(), ranked.scores.tolist(), ranked.displacement.tolist()
        out = _encode(Recommendation(list(map(Recommended, ids, scores, disp))))
        t3 = time.perf_counter()
        self.events.add(
            Event(
                rid,
                time.time(),
                user_id,
                model.provenance.model_version,
                fetched.version,
                ids,
                scores,
                key_id,
            )
        )
        c = m.candidates
        in_range = len(sel.ids) - ranked.skipped
        c["in_range"].inc(in_range)
        c["unknown"].inc(sel.unknown + ranked.skipped)
        c["out_of_range"].inc(max(sel.asked - sel.unknown - len(sel.ids), 0))
        m.stage["fetch"].observe(t1 - t0 - geo_s)
        m.stage["geo"].observe(geo_s)
        m.stage["score"].observe(t2 - t1)
        m.stage["serialize"].observe(t3 - t2)
        return 200, out, headers

    # -- ASGI ------------------------------------------------------------------------------------------------
    @staticmethod
    def _request_id(scope: Scope) -> tuple[str, str]:
        """(request id, key id): the gateway's, or for a direct call a fresh id and NO_KEY_ID."""
        rid = key = None
        for name, value in scope["headers"]:
            if name == _RID_HEADER:
                rid = value
            elif name == _KEY_HEADER:
                key = value
        if rid is not None and _MINTED_ID.fullmatch(rid) is not None:
            return rid.decode(), key.decode() if key is not None and _KEY_ID.fullmatch(key) else NO_KEY_ID
        return secrets.token_urlsafe(16), NO_KEY_ID

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        retry: asyncio.Task[None] | None = None
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.startup()
                self.events.start(self.settings.events_flush_s)
                retry = asyncio.create_task(self.retry_model()) if self.model is None else None
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if retry is not None:
                    retry.cancel()
                await self.events.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        rid, key_id = self._request_id(scope)
        if path.startswith("/recommend/") and method == "POST":
            status, body, headers = await self._recommend(path[len("/recommend/") :], receive, rid, key_id)
        elif method == "GET" and path == "/healthz":
            status, body, headers = 200, b'{"status":"ok"}', [_JSON]
        elif method == "GET" and path == "/readyz":
            ok, reason = await self.check_readiness()
            status, body, headers = (200 if ok else 503), _encode({"ready": ok, "reason": reason}), [_JSON]
        elif method == "GET" and path == "/version":
            status, body, headers = 200, json.dumps(self.version_info()).encode(), [_JSON]
        elif method == "GET" and path == "/metrics":
            body = generate_latest(self.metrics.registry)
            status, headers = 200, [(b"content-type", CONTENT_TYPE_LATEST.encode())]
        else:
            status, body, headers = 404, b'{"detail":"not found"}', [_JSON]
        headers.append((b"x-request-id", rid.encode()))
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _recommend(
        self, user_text: str, receive: Receive, rid: str, key_id: str
    ) -> tuple[int, bytes, Headers]:
        m = self.metrics
        s = self.settings
        t0 = time.perf_counter()
        try:
            body = await receive_body(receive, s.max_body_bytes, s.body_timeout_s)
            status, out, headers = await self.recommend(user_text, body, rid, key_id)
        except BodyError as exc:
            # Too slow: 408 and the connection closed. Too large (413) or cut by a disconnect (400): 422 with the
            # reason, as every other bad body here (this service's answer before it shared the gateway's reader).
            m.errors["bad_request"].inc()
            if exc.status == 408:
                status, out, headers = 408, _encode({"detail": str(exc)}), [_JSON, (b"connection", b"close")]
            else:
                status, out, headers = 422, _encode({"detail": str(exc)}), [_JSON]
        except BadRequestError as exc:
            m.errors["bad_request"].inc()
            status, out, headers = 422, _encode({"detail": str(exc)}), [_JSON]
        except UnavailableError as exc:
            m.errors[exc.cause].inc()
            status, out, headers = 503, _encode({"detail": str(exc)}), [_JSON, _RETRY]
        except CorruptUserError as exc:
            m.errors["corrupt_user"].inc()
            status, out, headers = 500, _encode({"detail": str(exc)}), [_JSON]
        except Exception:
            log.exception("request %s failed", rid)
            m.errors["internal"].inc()
            status, out, headers = 500, b'{"detail":"internal error"}', [_JSON]
        hist = m.ok if status < 400 else m.client_error if status < 500 else m.server_error
        hist.observe(time.perf_counter() - t0)
        return status, out, headers


def create_app(settings: InferenceSettings) -> InferenceApp:
    return InferenceApp(settings)
