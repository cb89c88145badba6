"""Alertmanager webhook receiver that starts the retraining pipeline through GitLab's pipeline trigger API.

Alertmanager re-sends a firing group every ``repeat_interval`` and two alerts (say online AUC low on two versions)
often describe one incident, so a trigger is sent only for a firing alert whose fingerprint has not triggered
within ``seen_ttl_s`` and only when no trigger was sent within ``cooldown_s``: one incident starts one retrain. The
fingerprints remembered expire after ``seen_ttl_s`` and are at most ``MAX_SEEN``, so memory stays bounded however
many alerts arrive.

The trigger passes pipeline *inputs*, not variables (issue 18.3): variables sent with a trigger override the CI's
own (an image, a namespace), inputs can only take the values ``.gitlab-ci.yml``'s ``spec:inputs`` allow. So
``alert_name`` is one of ``RETRAIN_ALERTS`` (the alerts the AlertmanagerConfig routes here; any other alert is
refused and counted as ``unknown_alert``) and ``alert_reason`` is cut down to ``ALERT_REASON_PATTERN``.

Both tokens are read from files (mounted Secrets), never from the environment or the command line: the GitLab
trigger token (FORKCAST_GITLAB_TOKEN_FILE) and the bearer token Alertmanager must present (FORKCAST_WEBHOOK_TOKEN_FILE),
compared in constant time. A request without it or with a wrong one is answered 401; one without Content-Length
411, one above the size cap 413; each rejection is counted under its outcome.

Two ports (issue 18.5): the webhook port (FORKCAST_PORT, 9109) serves POST /alerts and the kubelet's probes, never
/metrics; the metrics port (FORKCAST_METRICS_PORT, 9112) serves /metrics (and the probe routes) and no webhook. So
the NetworkPolicy admits Alertmanager alone to the port that can start a pipeline and Prometheus alone to the
metrics: one shared port had to admit both, so Prometheus' pods could reach the webhook.
"""

from __future__ import annotations

import argparse
import hmac
import io
import json
import logging
import re
import socket
import threading
import time
import urllib.parse
import urllib.request
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from forkcast_contract import metric_names as n
from forkcast_contract.metric_names import RETRAIN_ALERTS
from forkcast_monitoring.probes import ProbeHandler, always_ready, handler_class, start_probe_server
from forkcast_monitoring.settings import ReceiverSettings

log = logging.getLogger("forkcast_monitoring.receiver")
# A refused request's unread body is drained for at most this long / this much before the connection closes.
LINGER_S = 1.0
LINGER_BYTES = 64 * 1024
# The pipeline's alert_reason input accepts exactly this (the CI's spec:inputs regex); anything else is replaced.
ALERT_REASON_PATTERN = r"^[A-Za-z0-9 .,:=_%()-]{0,200}$"
ALERT_REASON_MAX = 200
_REASON_REFUSED = re.compile(r"[^A-Za-z0-9 .,:=_%()-]")
# The most alert fingerprints remembered at once (each expires after seen_ttl_s anyway).
MAX_SEEN = 10_000


def alert_reason(text: str) -> str:
    """``text`` as the pipeline's ``alert_reason`` input accepts it: whitespace as one space, every other character
    outside ``ALERT_REASON_PATTERN`` as ``_``, cut to 200 characters. An annotation is Prometheus-rendered text
    with label values in it; the pipeline must never see quotes, newlines or shell metacharacters from it."""
    flat = " ".join(text.split())
    return _REASON_REFUSED.sub("_", flat)[:ALERT_REASON_MAX]


@dataclass(frozen=True)
class TriggerTarget:
    gitlab_url: str  # e.g. https://gitlab.example.com
    project_id: str
    ref: str
    token: str

    def send(self, alert_name: str, reason: str) -> None:
        """POST /projects/:id/trigger/pipeline with the token and the inputs as form fields of the body.

        GitLab's pipeline trigger API takes ``token``, ``ref`` and ``inputs`` (a hash: "the list of inputs to be
        used to create the pipeline", the typed values of ``spec:inputs``) beside ``variables``
        (docs.gitlab.com/api/pipeline_triggers, "Trigger a pipeline with a token"; the `inputs` body parameter of
        POST /api/v4/projects/{id}/(ref/{ref}/)trigger/pipeline in GitLab's OpenAPI description, and
        gitlab-org/api/client-go commit 9ad770e4 "Add support for pipeline inputs to trigger API"). A hash travels
        in a form body as ``inputs[name]=value``, as ``variables[KEY]=value`` does in the documented curl example.
        The token is in the body, never in the URL (URLs end up in access logs).
        """
        if alert_name not in RETRAIN_ALERTS:
            raise ValueError(
                f"alert {alert_name!r} is not one that starts a retrain ({', '.join(RETRAIN_ALERTS)})"
            )
        project = urllib.parse.quote(self.project_id, safe="")
        url = f"{self.gitlab_url.rstrip('/')}/api/v4/projects/{project}/trigger/pipeline"
        body = urllib.parse.urlencode(
            {
                "token": self.token,
                "ref": self.ref,
                "inputs[alert_name]": alert_name,
                "inputs[alert_reason]": alert_reason(reason) or "no summary",  # the CI requires one
            }
        ).encode()
        with urllib.request.urlopen(
            urllib.request.Request(url, data=body, method="POST"), timeout=10
        ) as resp:
            if resp.status >= 300:
                raise OSError(f"trigger answered {resp.status}")


class Deduplicator:
    """Which firing alerts deserve a trigger; thread-safe (the HTTP server is threaded).

    ``seen`` maps each fingerprint that triggered to when it did, oldest first: an entry older than ``seen_ttl_s``
    is forgotten (a fingerprint still firing then may trigger again, cooldown permitting), and beyond ``max_seen``
    the oldest goes, so neither a long-running receiver nor a burst of distinct alerts grows it without bound.
    """

    def __init__(
        self,
        cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
        seen_ttl_s: float = 24 * 3600.0,
        max_seen: int = MAX_SEEN,
    ) -> None:
        self.cooldown_s, self.clock, self.seen_ttl_s, self.max_seen = cooldown_s, clock, seen_ttl_s, max_seen
        self.seen: OrderedDict[str, float] = OrderedDict()
        self.last_trigger: float | None = None
        self.lock = threading.Lock()

    def _forget_old(self, now: float) -> None:
        while self.seen and (
            len(self.seen) >= self.max_seen or now - next(iter(self.seen.values())) >= self.seen_ttl_s
        ):
            self.seen.popitem(last=False)

    def admit(self, fingerprint: str) -> str:
        """'trigger', 'duplicate' or 'cooldown'."""
        with self.lock:
            now = self.clock()
            self._forget_old(now)
            if fingerprint in self.seen:
                return "duplicate"
            if self.last_trigger is not None and now - self.last_trigger < self.cooldown_s:
                # Not remembered: an alert held back here has not triggered, so Alertmanager's first repeat after
                # the cooldown starts its retrain. Remembering it (as before the attacker review) swallowed every
                # repeat for seen_ttl_s, so whoever fired any retrain alert first silenced a real one for a day.
                return "cooldown"
            self.seen[fingerprint] = now
            self.last_trigger = now
            return "trigger"

    def resolved(self, fingerprint: str) -> None:
        with self.lock:
            self.seen.pop(fingerprint, None)


def handle(payload: dict[str, Any], dedup: Deduplicator, target: TriggerTarget, counter: Counter) -> None:
    for alert in payload.get("alerts", []):
        fingerprint = str(alert.get("fingerprint") or json.dumps(alert.get("labels", {}), sort_keys=True))
        if alert.get("status") != "firing":
            dedup.resolved(fingerprint)
            continue
        labels, notes = alert.get("labels", {}), alert.get("annotations", {})
        name = str(labels.get("alertname", ""))
        if (
            name not in RETRAIN_ALERTS
        ):  # not an alert the routes send here: it must not start (or block) a retrain
            log.warning("alert %r does not start a retrain: refused", alert_reason(name))
            counter.labels("unknown_alert").inc()
            continue
        outcome = dedup.admit(fingerprint)
        if outcome == "trigger":
            try:
                target.send(name, str(notes.get("summary", "alert fired")))
                outcome = "sent"
            except OSError as exc:
                log.error("retrain trigger failed: %s", exc)
                dedup.resolved(fingerprint)  # let Alertmanager's next repeat try again
                with dedup.lock:
                    dedup.last_trigger = None
                outcome = "failed"
        counter.labels(outcome).inc()


class DeadlineReader(io.RawIOBase):
    """A socket's input that ends at ``deadline`` (monotonic): each read may wait only for what is left of it.

    http.server reads a request through ``rfile`` with the socket timeout per read (``StreamRequestHandler.timeout``),
    which a client sending one byte just inside it renews for ever. Past the deadline a read raises TimeoutError,
    which BaseHTTPRequestHandler answers by closing the connection ("Request timed out"). After each read the
    socket's own timeout (``timeout_s``) is put back, so the response is not written under a nearly spent deadline.
    """

    def __init__(self, sock: socket.socket, deadline: float, timeout_s: float) -> None:
        super().__init__()
        self.sock, self.deadline, self.timeout_s = sock, deadline, timeout_s

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("request not received within the deadline")
        self.sock.settimeout(left)
        try:
            return self.sock.recv_into(buffer)
        finally:
            self.sock.settimeout(self.timeout_s)


def read_token(path: Path, what: str) -> str:
    """The token in ``path`` (a mounted Secret key), stripped; an unreadable or empty file is an error naming it."""
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise ValueError(f"{what} file {path} is not readable: {exc.strerror}") from exc
    if not token:
        raise ValueError(f"{what} file {path} is empty")
    return token


class WebhookAuth:
    """Checks ``Authorization: Bearer <token>`` against the token file, re-read on every call so that a rotated
    Secret takes effect without a restart (webhooks are rare; the read costs microseconds). No file configured
    means no authentication, which ReceiverSettings refuses outside environment=local."""

    def __init__(self, token_file: Path | None) -> None:
        self.token_file = token_file
        if token_file is not None:
            read_token(token_file, "webhook token")  # fail at start, not at the first alert

    def admits(self, authorization: str | None) -> bool:
        if self.token_file is None:
            return True
        try:
            expected = read_token(self.token_file, "webhook token")
        except ValueError as exc:
            log.error("%s: refusing every webhook", exc)
            return False
        scheme, _, presented = (authorization or "").partition(" ")
        # Constant time: the comparison does not reveal how many leading characters of a guess were right.
        return scheme.lower() == "bearer" and hmac.compare_digest(
            presented.strip().encode(), expected.encode()
        )


class WebhookServer(ThreadingHTTPServer):
    """The webhook port's server; ``registry`` holds its counters, which ``start_probe_server`` serves on the
    metrics port (never this one)."""

    registry: CollectorRegistry


def make_server(
    host: str,
    port: int,
    target: TriggerTarget,
    cooldown_s: float,
    *,
    seen_ttl_s: float = 24 * 3600.0,
    auth: WebhookAuth | None = None,
    max_body_bytes: int = 1 << 20,
    request_timeout_s: float = 10.0,
) -> WebhookServer:
    """POST /alerts (Alertmanager's webhook) and the probes GET /healthz, /readyz; GET /metrics is 404 here (the
    counters are served on the metrics port from ``server.registry``)."""
    registry = CollectorRegistry()
    counter = Counter(
        n.RETRAIN_TRIGGERS_TOTAL.removesuffix("_total"),
        "Retrain triggers by outcome",
        ["outcome"],
        registry=registry,
    )
    dedup = Deduplicator(cooldown_s, seen_ttl_s=seen_ttl_s)
    authority = auth or WebhookAuth(None)

    class Handler(ProbeHandler):
        timeout = request_timeout_s  # socket timeout: a stalled client is cut off

        def setup(self) -> None:
            super().setup()
            # One deadline for the whole request (line, headers, body), not the per-read socket timeout alone: a
            # client dripping a byte per read kept its thread for ever before (attacker review of issue 18.5).
            self.rfile = io.BufferedReader(
                DeadlineReader(self.connection, time.monotonic() + request_timeout_s, request_timeout_s)
            )

        def do_GET(self) -> None:  # noqa: N802 (the name http.server dispatches to)
            if self.path.split("?", 1)[0] == "/metrics":  # the metrics port's route, not the webhook port's
                self.reply(404, b"not found: /metrics is on the metrics port\n")
                return
            super().do_GET()

        def do_POST(self) -> None:  # noqa: N802 (the name http.server dispatches to)
            if self.path.split("?", 1)[0] != "/alerts":
                self.reply(404, b"not found\n")
                return
            status, outcome = self.receive()
            if outcome is not None:
                counter.labels(outcome).inc()
            self.reply(status, HTTPStatus(status).phrase.encode() + b"\n")
            if self.close_connection:
                self.linger()

        def linger(self) -> None:
            """Half-close, then discard what the client still sends for at most LINGER_S and LINGER_BYTES: closing
            with unread input makes the kernel reset the connection, and the client may lose the refusal we just
            sent (RFC 9112 section 9.6, "Tear-down")."""
            deadline = time.monotonic() + LINGER_S
            try:
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_WR)
                budget = LINGER_BYTES
                while budget > 0 and (left := deadline - time.monotonic()) > 0:
                    self.connection.settimeout(left)
                    chunk = self.connection.recv(min(budget, 16384))
                    if not chunk:
                        break
                    budget -= len(chunk)
            except OSError:
                pass

        def receive(self) -> tuple[int, str | None]:
            """(HTTP status, rejection outcome to count or None when the alerts were handled)."""
            if not authority.admits(self.headers.get("Authorization")):
                return 401, "unauthorized"
            length = self.headers.get("Content-Length")
            if length is None or self.headers.get("Transfer-Encoding"):
                self.close_connection = True  # the unread body must not be taken for the next request
                return 411, "length_required"
            if not length.isdigit():
                self.close_connection = True
                return 400, "malformed"
            if int(length) > max_body_bytes:
                self.close_connection = True
                return 413, "too_large"
            try:
                payload = json.loads(self.rfile.read(int(length)))
                if not isinstance(payload, dict):
                    raise ValueError("the body is not a JSON object")
                handle(payload, dedup, target, counter)
            except (ValueError, AttributeError):
                return 400, "malformed"
            return 200, None

    server = WebhookServer((host, port), handler_class(registry, always_ready, Handler))
    server.registry = registry
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    s = ReceiverSettings()
    parser = argparse.ArgumentParser(prog="forkcast-alert-receiver", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=s.host, help="address to bind (FORKCAST_HOST)")
    parser.add_argument(
        "--port", type=int, default=s.port, help="POST /alerts, GET /healthz /readyz (FORKCAST_PORT)"
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=s.metrics_port,
        help="GET /metrics /healthz /readyz, no webhook (FORKCAST_METRICS_PORT)",
    )
    parser.add_argument("--gitlab-url", default=s.gitlab_url, help="GitLab base URL (FORKCAST_GITLAB_URL)")
    parser.add_argument(
        "--project-id", default=s.gitlab_project_id, help="project id or path (FORKCAST_GITLAB_PROJECT_ID)"
    )
    parser.add_argument("--ref", default=s.gitlab_ref, help="branch to retrain on (FORKCAST_GITLAB_REF)")
    parser.add_argument(
        "--token-file",
        type=Path,
        default=s.gitlab_token_file,
        help="file holding the pipeline trigger token (FORKCAST_GITLAB_TOKEN_FILE)",
    )
    parser.add_argument(
        "--webhook-token-file",
        type=Path,
        default=s.webhook_token_file,
        help="file holding the bearer token Alertmanager must present (FORKCAST_WEBHOOK_TOKEN_FILE)",
    )
    parser.add_argument(
        "--cooldown-s", type=float, default=s.cooldown_s, help="at most one trigger per this period"
    )
    args = parser.parse_args(argv)
    s = s.model_copy(
        update={
            "host": args.host,
            "port": args.port,
            "metrics_port": args.metrics_port,
            "gitlab_url": args.gitlab_url,
            "gitlab_project_id": args.project_id,
            "gitlab_ref": args.ref,
            "gitlab_token_file": args.token_file,
            "webhook_token_file": args.webhook_token_file,
            "cooldown_s": args.cooldown_s,
        }
    )
    if missing := s.missing():
        parser.error("missing required settings: " + ", ".join(missing) + " (or the matching options)")
    assert s.gitlab_url and s.gitlab_project_id and s.gitlab_token_file  # narrowed by missing()
    try:
        token = read_token(s.gitlab_token_file, "GitLab trigger token")
        auth = WebhookAuth(s.webhook_token_file)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=s.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    server = make_server(
        s.host,
        s.port,
        TriggerTarget(s.gitlab_url, s.gitlab_project_id, s.gitlab_ref, token),
        s.cooldown_s,
        seen_ttl_s=s.seen_ttl_s,
        auth=auth,
        max_body_bytes=s.max_body_bytes,
        request_timeout_s=s.request_timeout_s,
    )
    if s.webhook_token_file is None:
        log.warning("no FORKCAST_WEBHOOK_TOKEN_FILE: webhooks are not authenticated (environment=local only)")
    metrics = start_probe_server(s.host, s.metrics_port, server.registry)
    log.info("alert receiver on %s:%d, metrics on %s:%d", s.host, s.port, s.host, metrics.server_address[1])
    server.serve_forever()
    return 0
