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

from forkcast_devservers.ports import free_port
from forkcast_devservers.process import Proc, group_members, start_ticks
from forkcast_local.config import PlatformConfig, load_config, read_state
from forkcast_local.demo import DemoOptions, run_demo
from forkcast_local.supervisor import _Ports, down, prepare, status, up
from forkcast_monitoring.manifest_config import load

ROOT = Path(__file__).resolve().parents[3]
# What `up` runs: S3 and MLflow beside the render, every workload of manifests/overlays/local, then monitoring.
WORKLOADS = [
    "redis",
    "redis-events",
    "alert-receiver",
    "drift",
    "gateway",
    "lake-compact",
    "online-auc",
    "inference",
]
NAMES = ["seaweed", "mlflow", *WORKLOADS, "alertmanager", "prometheus"]


def _config(tmp: Path, ports: dict[str, int]) -> PlatformConfig:
    toml = tmp / "platform.toml"
    lines = ["[ports]", *(f'"{k}" = {v}' for k, v in ports.items()), "[settings]"]
    lines += ['mlflow_artifacts_bucket = "mlflow-artifacts"', 'overlay = "local"']
    toml.write_text("\n".join(lines) + "\n")
    return load_config(toml, tmp / "local")


def _distinct_ports() -> dict[str, int]:
    ports: dict[str, int] = {}
    while len(set(ports.values())) < len(NAMES):
        ports = {name: free_port() for name in NAMES}
    return ports


def _get(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=5) as r:
        data: dict[str, object] = json.load(r)
        return data


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


def test_up_runs_the_render_and_serves_the_promoted_model_through_the_gateway(
    platform: PlatformConfig,
) -> None:
    rows = {row.name: row for row in status(platform)}
    assert list(rows) == NAMES
    assert all(row.running and row.healthy for row in rows.values()), rows
    assert rows["inference"].ready and rows["gateway"].ready
    release = (platform.gitops / "manifests/overlays/local/model-release.yaml").read_text()
    key = platform.api_key_file.read_text().strip()
    code, headers, body = _recommend(platform, key)
    assert code == 200, body
    assert headers["x-model-version"] in release
    assert isinstance(json.loads(body)["restaurants"], list)
    assert _recommend(platform, None)[0] == 401
    # Every rendered workload runs with the render's environment: the gateway's is the local overlay's.
    gateway = prepare(platform).plan("gateway")
    assert gateway.env["FORKCAST_ENVIRONMENT"] == "local"
    assert read_state(platform)["components"]["gateway"]["fingerprint"]


def test_prometheus_evaluates_the_rendered_prometheus_rule(platform: PlatformConfig) -> None:
    port = read_state(platform)["components"]["prometheus"]["port"]
    groups = _get(f"http://127.0.0.1:{port}/api/v1/rules")["data"]["groups"]  # type: ignore[index]
    served = {(g["name"], r["name"]) for g in groups for r in g["rules"]}
    rendered = load("local", ROOT / "manifests")
    expected = {
        (g["name"], r.get("alert") or r.get("record")) for g in rendered.rule_groups for r in g["rules"]
    }
    assert served == expected
    # Every rendered monitor whose workload runs here is a scrape job at that pod's loopback address.
    targets = _get(f"http://127.0.0.1:{port}/api/v1/targets")["data"]["activeTargets"]  # type: ignore[index]
    jobs = {t["labels"]["job"] for t in targets}
    assert {"gateway", "inference", "online-auc"} <= jobs
    assert all(t["labels"]["namespace"] == rendered.namespace for t in targets)


def _procs(config: PlatformConfig) -> dict[str, tuple[int, int]]:
    """Component -> (pid, port) of what the state records as running."""
    records = read_state(config)["components"]
    return {n: (r["proc"]["pid"], r["port"]) for n, r in records.items() if r.get("proc")}


def test_a_killed_component_is_restarted_alone(platform: PlatformConfig) -> None:
    before = _procs(platform)
    inference = before["inference"][0]
    os.kill(inference, signal.SIGKILL)
    # 30 s, asserted (was 5 s, then on regardless): `up` must find the pod gone, and a starved CI machine may take
    # a while to reap it.
    deadline = time.monotonic() + 30
    while start_ticks(inference) is not None:
        assert time.monotonic() < deadline, f"inference (PID {inference}) still there 30 s after SIGKILL"
        time.sleep(0.05)
    lines: list[str] = []
    up(platform, log=lines.append)
    after = _procs(platform)
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
    procs = {n: Proc.from_dict(r["proc"]) for n, r in records.items() if r.get("proc")}
    groups = {n: group_members(p.pid) for n, p in procs.items()}
    assert set(groups) == set(NAMES) and all(groups.values())
    bystander = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        down(platform)
        for name, pids in groups.items():
            assert not group_members(procs[name].pid), name
            assert all(start_ticks(pid) is None for pid in pids), name
        assert bystander.poll() is None  # a process `up` did not start is left alone
    finally:
        bystander.kill()
        bystander.wait()
    assert not any(row.running for row in status(platform))


def test_a_taken_port_falls_back_to_a_free_one(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        config = _config(tmp_path, {name: port if name == "redis" else free_port() for name in NAMES})
        ports = _Ports(config, {})
        chosen = {name: ports(name) for name in NAMES}
    assert chosen["redis"] != port
    assert len(set(chosen.values())) == len(NAMES)


def test_a_fallback_port_is_kept_across_restarts_until_the_config_changes(tmp_path: Path) -> None:
    ports = {name: free_port() for name in NAMES}
    config = _config(tmp_path, ports)
    fallback = free_port()
    dead = {"proc": None, "fingerprint": "", "port": fallback, "wanted": ports["redis"]}
    assert (
        _Ports(config, {"redis": dead})("redis") == fallback
    )  # the configured port is free, but redis ran here
    moved = _config(tmp_path, {**ports, "redis": free_port()})
    assert _Ports(moved, {"redis": dead})("redis") == moved.ports["redis"]  # platform.toml changed: it wins
