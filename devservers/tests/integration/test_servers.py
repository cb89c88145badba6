"""Each server for real: it starts on 127.0.0.1, answers, keeps its data where told, and stops by PID."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from forkcast_devservers import binaries
from forkcast_devservers.binaries import Binary, MissingBinaryError, locate
from forkcast_devservers.process import start_ticks
from forkcast_devservers.ready import redis_ping
from forkcast_devservers.resp import RespError
from forkcast_devservers.servers import Alertmanager, Mlflow, Prometheus, RedisCluster, RedisServer, Seaweed


def test_redis_server_answers_and_stops(redis_server_factory: Callable[..., RedisServer]) -> None:
    server = redis_server_factory()
    assert server.url == f"redis://127.0.0.1:{server.port}/0"
    assert redis_ping("127.0.0.1", server.port)
    assert server.command("CONFIG", "GET", "bind") == [b"bind", b"127.0.0.1"]
    assert server.command("CONFIG", "GET", "save") == [b"save", b""]
    assert server.cpu_seconds() >= 0
    assert server.proc is not None
    pid = server.proc.pid
    server.stop()
    assert start_ticks(pid) is None
    assert not redis_ping("127.0.0.1", server.port)


def test_redis_password_is_required_and_in_the_url(redis_server_factory: Callable[..., RedisServer]) -> None:
    server = redis_server_factory(password="s3cr:et")
    assert server.url == f"redis://:s3cr%3Aet@127.0.0.1:{server.port}/0"
    assert not redis_ping("127.0.0.1", server.port), "PING without AUTH must be refused"
    assert redis_ping("127.0.0.1", server.port, password="s3cr:et")


def test_redis_acl_file_users(redis_server_factory: Callable[..., RedisServer], tmp_path: Path) -> None:
    acl = tmp_path / "users.acl"
    acl.write_text("user default off\nuser edge on >edgepw ~fct:* +@read +ping -@dangerous\n")
    server = redis_server_factory(aclfile=acl, username="edge", password="edgepw")
    assert redis_ping("127.0.0.1", server.port, username="edge", password="edgepw")
    with pytest.raises(RespError, match="NOPERM"):
        server.command("FLUSHALL")


def test_redis_persistence_keeps_data_across_a_restart(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory(persistence=True)
    server.command("SET", "k", "v")
    server.command("SAVE")
    port = server.port
    server.stop()
    server.start()
    assert server.port == port
    assert server.command("GET", "k") == b"v"


def test_redis_conf_flags_are_applied(redis_server_factory: Callable[..., RedisServer]) -> None:
    server = redis_server_factory(conf=("--maxmemory", "10mb", "--maxmemory-policy", "allkeys-lru"))
    assert server.command("CONFIG", "GET", "maxmemory-policy") == [b"maxmemory-policy", b"allkeys-lru"]


def test_redis_cluster_spreads_slots_over_three_masters(redis_cluster: RedisCluster) -> None:
    assert len(redis_cluster.nodes) == 3
    assert all(port <= 55535 for _, port in redis_cluster.startup_nodes)
    slots = redis_cluster.nodes[0].command("CLUSTER", "SLOTS")
    assert isinstance(slots, list)
    assert sorted((r[0], r[1]) for r in slots) == [(0, 5460), (5461, 10922), (10923, 16383)]  # type: ignore[index]


def test_seaweed_bucket_creation_is_signed_and_idempotent(seaweed: Seaweed) -> None:
    import boto3

    seaweed.create_bucket("devservers-test")
    seaweed.create_bucket("devservers-test")
    s3 = boto3.client(
        "s3",
        endpoint_url=seaweed.endpoint,
        aws_access_key_id=seaweed.access_key,
        aws_secret_access_key=seaweed.secret_key,
        region_name="us-east-1",
    )
    assert "devservers-test" in {b["Name"] for b in s3.list_buckets()["Buckets"]}
    not_the_secret = seaweed.secret_key + "-wrong"
    wrong = Seaweed(seaweed.dir, access_key=seaweed.access_key, secret_key=not_the_secret, port=seaweed.port)
    with pytest.raises(RuntimeError, match="creating bucket other failed: 403"):
        wrong.create_bucket("other")


@pytest.mark.slow
def test_mlflow_server_stores_artifacts_in_seaweed(mlflow: Mlflow) -> None:
    with urllib.request.urlopen(f"{mlflow.url}/health", timeout=5) as r:
        assert r.status == 200
    assert mlflow.artifacts == "s3://mlflow-artifacts/"


def test_prometheus_and_alertmanager_load_their_config(
    prometheus: Callable[..., Prometheus],
    prometheus_server: Callable[..., Prometheus],
    alertmanager_server: Callable[..., Alertmanager],
    tmp_path: Path,
) -> None:
    """Through ``prometheus``, the issue's name for the ``prometheus_server`` factory (one factory, not two)."""
    assert prometheus is prometheus_server
    am_cfg = tmp_path / "am.yml"
    am_cfg.write_text("route:\n  receiver: nowhere\nreceivers:\n  - name: nowhere\n")
    am = alertmanager_server(am_cfg)
    rules = tmp_path / "rules.yml"
    rules.write_text("groups:\n  - name: g\n    rules:\n      - alert: Always\n        expr: vector(1)\n")
    prom_cfg = tmp_path / "prom.yml"
    prom_cfg.write_text(
        f"rule_files: [{rules}]\n"
        f"alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{am.port}']\n"
    )
    prom = prometheus(prom_cfg)
    with urllib.request.urlopen(f"{prom.url}/api/v1/rules", timeout=5) as r:
        groups = json.load(r)["data"]["groups"]
    assert [rule["name"] for g in groups for rule in g["rules"]] == ["Always"]
    with urllib.request.urlopen(f"{am.url}/api/v2/status", timeout=5) as r:
        assert json.load(r)["config"]["original"].startswith("global:")


def test_a_missing_binary_names_its_package() -> None:
    ghost = Binary(("forkcast-no-such-server",), "the Debian package forkcast-ghost (`make system-packages`)")
    with pytest.raises(
        MissingBinaryError,
        match=r"forkcast-no-such-server not found: install the Debian package forkcast-ghost",
    ):
        locate(ghost)
    assert locate(binaries.REDIS_SERVER).endswith("redis-server")


def test_a_server_that_cannot_bind_fails_fast_with_its_log(
    redis_server_factory: Callable[..., RedisServer], tmp_path: Path
) -> None:
    taken = redis_server_factory()
    clash = RedisServer(tmp_path / "clash", port=taken.port)
    # Which of the two checks sees the exit first depends on scheduling (spawn's "exited at once" or the readiness
    # wait's "exited before it was ready"); either way the error names the server and quotes its log's reason.
    with pytest.raises(
        RuntimeError, match=r"redis-server exited (at once|before it was ready)[\s\S]*(in use|bind)"
    ):
        clash.start()
    assert clash.proc is None
