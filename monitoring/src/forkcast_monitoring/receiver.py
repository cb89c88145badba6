"""Alertmanager webhook receiver that starts the retraining pipeline through GitLab's pipeline trigger API.

Alertmanager re-sends a firing group every ``repeat_interval`` and two alerts (say online AUC low on two versions)
often describe one incident, so a trigger is sent only for a firing alert whose fingerprint has not triggered
before and only when no trigger was sent within ``cooldown_s``: one incident starts one retrain. The CI requires
the variables ALERT_NAME and ALERT_REASON on triggered pipelines (.gitlab-ci.yml). The token is read from a file
(a mounted secret) or the environment, never from the command line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest

from forkcast_contract import metric_names as n

log = logging.getLogger("forkcast_monitoring.receiver")


@dataclass(frozen=True)
class TriggerTarget:
    gitlab_url: str  # e.g. https://gitlab.example.com
    project_id: str
    ref: str
    token: str

    def send(self, alert_name: str, reason: str) -> None:
        project = urllib.parse.quote(self.project_id, safe="")
        url = f"{self.gitlab_url.rstrip('/')}/api/v4/projects/{project}/trigger/pipeline"
        body = urllib.parse.urlencode(
            {
                "token": self.token,
                "ref": self.ref,
                "variables[ALERT_NAME]": alert_name,
                "variables[ALERT_REASON]": reason,
            }
        ).encode()
        with urllib.request.urlopen(
            urllib.request.Request(url, data=body, method="POST"), timeout=10
        ) as resp:
            if resp.status >= 300:
                raise OSError(f"trigger answered {resp.status}")


class Deduplicator:
    """Which firing alerts deserve a trigger; thread-safe (the HTTP server is threaded)."""

    def __init__(self, cooldown_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.cooldown_s, self.clock = cooldown_s, clock
        self.seen: set[str] = set()
        self.last_trigger: float | None = None
        self.lock = threading.Lock()

    def admit(self, fingerprint: str) -> str:
        """'trigger', 'duplicate' or 'cooldown'."""
        with self.lock:
            if fingerprint in self.seen:
                return "duplicate"
            now = self.clock()
            if self.last_trigger is not None and now - self.last_trigger < self.cooldown_s:
                self.seen.add(fingerprint)
                return "cooldown"
            self.seen.add(fingerprint)
            self.last_trigger = now
            return "trigger"

    def resolved(self, fingerprint: str) -> None:
        with self.lock:
            self.seen.discard(fingerprint)


def handle(payload: dict[str, Any], dedup: Deduplicator, target: TriggerTarget, counter: Counter) -> None:
    for alert in payload.get("alerts", []):
        fingerprint = str(alert.get("fingerprint") or json.dumps(alert.get("labels", {}), sort_keys=True))
        if alert.get("status") != "firing":
            dedup.resolved(fingerprint)
            continue
        outcome = dedup.admit(fingerprint)
        if outcome == "trigger":
            labels, notes = alert.get("labels", {}), alert.get("annotations", {})
            try:
                target.send(str(labels.get("alertname", "unknown")), str(notes.get("summary", "alert fired")))
                outcome = "sent"
            except OSError as exc:
                log.error("retrain trigger failed: %s", exc)
                dedup.resolved(fingerprint)  # let Alertmanager's next repeat try again
                with dedup.lock:
                    dedup.last_trigger = None
                outcome = "failed"
        counter.labels(outcome).inc()


def make_server(host: str, port: int, target: TriggerTarget, cooldown_s: float) -> ThreadingHTTPServer:
    registry = CollectorRegistry()
    counter = Counter(
        n.RETRAIN_TRIGGERS_TOTAL.removesuffix("_total"),
        "Retrain triggers by outcome",
        ["outcome"],
        registry=registry,
    )
    dedup = Deduplicator(cooldown_s)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            try:
                payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                handle(payload, dedup, target, counter)
                self.send_response(200)
            except (ValueError, AttributeError):
                self.send_response(400)
            self.end_headers()

        def do_GET(self) -> None:
            body = generate_latest(registry)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug(format, *args)

    return ThreadingHTTPServer((host, port), Handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="forkcast-alert-receiver", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    parser.add_argument(
        "--port", type=int, default=9109, help="port (POST /alerts from Alertmanager, GET /metrics)"
    )
    parser.add_argument("--gitlab-url", default=os.environ.get("FORKCAST_GITLAB_URL", ""), required=False)
    parser.add_argument("--project-id", default=os.environ.get("FORKCAST_GITLAB_PROJECT_ID", ""))
    parser.add_argument(
        "--ref", default=os.environ.get("FORKCAST_GITLAB_REF", "main"), help="branch to retrain on"
    )
    parser.add_argument(
        "--token-file", type=Path, help="file holding the trigger token (else FORKCAST_GITLAB_TRIGGER_TOKEN)"
    )
    parser.add_argument(
        "--cooldown-s", type=float, default=6 * 3600, help="at most one trigger per this period"
    )
    args = parser.parse_args(argv)
    token = (
        args.token_file.read_text().strip()
        if args.token_file
        else os.environ.get("FORKCAST_GITLAB_TRIGGER_TOKEN", "")
    )
    if not (args.gitlab_url and args.project_id and token):
        parser.error(
            "needs --gitlab-url, --project-id and a trigger token (--token-file or FORKCAST_GITLAB_TRIGGER_TOKEN)"
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    server = make_server(
        args.host,
        args.port,
        TriggerTarget(args.gitlab_url, args.project_id, args.ref, token),
        args.cooldown_s,
    )
    log.info("alert receiver on %s:%d", args.host, args.port)
    server.serve_forever()
    return 0
