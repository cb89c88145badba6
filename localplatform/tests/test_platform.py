"""The local platform end to end on tiny data: demo (up, publish, promote, features, requests), status, a request of
our own through the gateway, a crashed component restarted alone, and `down` leaving no process behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from forkcast_local import observability
from forkcast_local.config import PlatformConfig, free_port, load_config, read_state
from forkcast_local.demo import DemoOptions, run_demo
from forkcast_local.procs import group_members, is_ours, start_time, stop
from forkcast_local.supervisor import context, down, status, up
from forkcast_monitoring.manifest_config import load

NAMES = ["redis", "seaweed", "mlflow", "inference", "gateway", "online_auc", "alertmanager", "prometheus"]


def _distinct_ports() -> dict[str, int]:
    ports: dict[str, int] = {}
    while len(set(ports.values())) < len(NAMES):
        ports = {name: free_port() for name in NAMES}
    return ports


def _config(tmp: Path, ports: dict[str, int]) -> PlatformConfig:
    toml = tmp / "platform.toml"
    lines = ["[ports]", *(f"{k} = {v}" for k, v in ports.items()), "[settings]"]
    lines += [
        'bucket = "forkcast-models"',
        'mlflow_artifacts_bucket = "mlflow-artifacts"',
        'feature_prefix = "fc"',
        'overlay = "dev"',
    ]
    toml.write_text("\n".join(lines) + "\n")
    return load_config(toml, tmp / "local")


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformConfig]:
    tmp = tmp_path_factory.mktemp("platform")
    config = _config(tmp, _distinct_ports())
    try:
        assert run_demo(config, DemoOptions(tmp / "tiny", "tiny", 1, 40)) == 0
        yield config
    finally:
        down(config)


def _recommend(config: PlatformConfig, key: str | None) -> tuple[int, dict[str, str], bytes]:
    port = read_state(config)["components"]["gateway"]["port"]
    body = json.dumps({"candidate_restaurant_ids": list(range(300)), "latitude": 13.75, "longitude": 100.5})
    headers = {"content-type": "application/json", **({"x-api-key": key} if key else {})}
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/recommend/u00001", data=body.encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_up_is_healthy_and_serves_the_promoted_model_through_the_gateway(platform: PlatformConfig) -> None:
    rows = {row.name: row for row in status(platform)}
    assert list(rows) == NAMES
    assert all(row.running and row.healthy for row in rows.values())
    assert rows["inference"].ready and rows["gateway"].ready
    release = (platform.gitops / "manifests/overlays/dev/model-release.yaml").read_text()
    key = platform.api_key_file.read_text().strip()
    assert platform.keys_file.read_text().startswith("local-demo:")
    code, headers, body = _recommend(platform, key)
    assert code == 200, body
    assert headers["x-model-version"] in release
    assert isinstance(json.loads(body)["restaurants"], list)
    assert _recommend(platform, None)[0] == 401
    # Prometheus scrapes, at the loopback address of the component running it, every workload a monitor of the
    # rendered overlay selects and a component runs here, and loads the PrometheusRule manifests/observability renders.
    prom = yaml.safe_load((platform.root / "prometheus" / "prometheus.yml").read_text())
    targets = {c["job_name"]: c["static_configs"][0]["targets"] for c in prom["scrape_configs"]}
    ports = {n: r["port"] for n, r in read_state(platform)["components"].items()}
    rendered = load(observability.OVERLAY, observability.MANIFESTS)
    expected = {
        job.name: [f"127.0.0.1:{ports[observability.WORKLOAD_COMPONENTS[w]]}" for w in job.workloads]
        for job in rendered.scrape_jobs
        if all(w in observability.WORKLOAD_COMPONENTS for w in job.workloads)
    }
    assert {"gateway", "inference"} <= set(expected)
    assert targets == expected
    assert all(
        c["static_configs"][0]["labels"] == {"namespace": rendered.namespace} for c in prom["scrape_configs"]
    )
    (rule_file,) = prom["rule_files"]
    assert yaml.safe_load(Path(rule_file).read_text()) == rendered.rules()
    # The user's repository got no commit: promotion went to the scratch repo only.
    log = subprocess.run(["git", "log", "--format=%s"], cwd=platform.gitops, capture_output=True, text=True)
    assert log.stdout.splitlines()[0].startswith("Release model ")


def test_a_killed_component_is_restarted_alone(platform: PlatformConfig) -> None:
    records = read_state(platform)["components"]
    before = {n: (r["pid"], r["port"]) for n, r in records.items()}
    inference = records["inference"]["pid"]
    os.kill(inference, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while start_time(inference) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    lines: list[str] = []
    up(platform, log=lines.append)
    after = {n: (r["pid"], r["port"]) for n, r in read_state(platform)["components"].items()}
    assert after["inference"][0] != inference
    assert after["inference"][1] == before["inference"][1], (lines, before, after)
    assert {n: p for n, p in after.items() if n != "inference"} == {
        n: p for n, p in before.items() if n != "inference"
    }, (lines, before, after)
    assert [line.split()[:2] for line in lines if "started" in line] == [["inference", "started"]]
    deadline = time.monotonic() + 60
    while _recommend(platform, platform.api_key_file.read_text().strip())[0] != 200:
        assert time.monotonic() < deadline, "restarted inference never served"
        time.sleep(0.3)


def test_z_down_stops_every_process_it_started_and_nothing_else(platform: PlatformConfig) -> None:
    records = read_state(platform)["components"]
    groups = {n: group_members(int(r["pid"])) for n, r in records.items()}
    assert all(groups.values())
    down(platform)
    for name, pids in groups.items():
        assert not group_members(int(records[name]["pid"])), name
        assert all(start_time(pid) is None for pid in pids), name
    assert not any(row.running for row in status(platform))


def test_stop_refuses_a_pid_whose_start_time_does_not_match(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        started = start_time(proc.pid)
        assert started is not None and is_ours(proc.pid, started)
        assert stop(proc.pid, started - 1) is False  # a reused PID: not the process we recorded
        assert proc.poll() is None
        assert stop(proc.pid, started) is True
        assert start_time(proc.pid) is None  # stopped and reaped (stop collects its own children's status)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_taken_port_falls_back_to_a_free_one(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        config = _config(tmp_path, {name: port if name == "redis" else free_port() for name in NAMES})
        ctx = context(config, read_state(config))
    assert ctx.ports["redis"] != port
    assert len(set(ctx.ports.values()) | set(ctx.seaweed_ports.values())) == len(NAMES) + len(
        ctx.seaweed_ports
    )


def test_a_fallback_port_is_kept_across_restarts_until_the_config_changes(tmp_path: Path) -> None:
    ports = {name: free_port() for name in NAMES}
    config = _config(tmp_path, ports)
    fallback = free_port()
    dead = {"pid": 0, "start_time": 0, "fingerprint": "", "port": fallback, "wanted": ports["redis"]}
    state = {"components": {"redis": dead}}
    assert (
        context(config, state).ports["redis"] == fallback
    )  # the configured port is free, but redis ran here
    moved = _config(tmp_path, {**ports, "redis": free_port()})
    assert context(moved, state).ports["redis"] == moved.ports["redis"]  # platform.toml changed: it wins


def test_fallback_ports_lie_below_the_ephemeral_range() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert all(20000 <= free_port() < low for _ in range(20))
