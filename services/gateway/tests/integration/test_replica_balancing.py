"""Per-request balancing over inference replicas, and a canary's weight, through a real `forkcast-gateway` process
and five real upstream processes (forkcast_gateway.testing stand-ins, one uvicorn process each, counting what
reaches them).

What is shown, over 10,000 requests each: five endpoints of one group (four stable replicas and a canary pod, as
the headless Service inference-pods lists them in the cluster) each get 1/5 of the requests — so a canary's weight
is its share of ready pods, the mechanism the Argo canary uses; and with weighted groups (``stable*60=…;
canary*40=…``) the canary gets its 40 % of users while the stable replicas split the rest evenly. Each replica's
share is asserted within 10 % of its expected share, by name.

Per request, not per connection: the client sends over only two keep-alive connections, fewer than there are
replicas, so a balancer that picked an endpoint per connection (kube-proxy behind a ClusterIP Service) would leave
at least three replicas with nothing, and the check names them.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from forkcast_devservers.load import connect
from forkcast_devservers.ports import free_port
from forkcast_devservers.process import Proc, spawn, stop
from forkcast_devservers.ready import http_ok, wait_until
from forkcast_devservers.servers import RedisServer
from forkcast_gateway.testing import KEY

BIN = Path(sys.executable).parent
REQUESTS = 10_000
CONNECTIONS = 2
TOLERANCE = 0.10  # relative: a replica expected to get 20 % must get 18-22 %
BODY = b'{"candidate_restaurant_ids":[1,2,3],"latitude":13.75,"longitude":100.5}'
NAMES = ["stable-0", "stable-1", "stable-2", "stable-3", "canary-0"]


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    """name → port of five stand-in upstream processes."""
    logs = tmp_path_factory.mktemp("replicas")
    procs: list[Proc] = []
    ports = {name: free_port() for name in NAMES}
    try:
        for name, port in ports.items():
            argv = [sys.executable, "-m", "forkcast_gateway.testing", "--name", name, "--port", str(port)]
            procs.append(spawn(argv, log=logs / f"{name}.log"))
        for (name, port), proc in zip(ports.items(), procs, strict=True):
            wait_until(
                lambda p=port: http_ok(f"http://127.0.0.1:{p}/hits"), timeout_s=30, what=name, proc=proc
            )
        yield ports
    finally:
        for proc in procs:
            stop(proc)


def hits(ports: dict[str, int]) -> dict[str, int]:
    """Requests each replica has received so far (its own count)."""
    out = {}
    for name, port in ports.items():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/hits", timeout=5) as r:
            out[name] = int(json.load(r)["hits"])
    return out


@pytest.fixture
def gateway(
    redis_server_factory: Callable[..., RedisServer],
    tmp_path: Path,
    keys_file: Path,
    request_id_key_file: Path,
) -> Iterator[Callable[[str], int]]:
    """Start a real `forkcast-gateway` process with ``FORKCAST_UPSTREAMS`` = the given spec; returns its port once
    it is ready (every upstream answered its readiness probe)."""
    redis = redis_server_factory()
    started: list[Proc] = []

    def start(upstreams: str) -> int:
        port = free_port()
        env = {
            **os.environ,
            "FORKCAST_ENVIRONMENT": "local",
            "FORKCAST_PORT": str(port),
            "FORKCAST_UPSTREAMS": upstreams,
            "REDIS_URL": redis.url,
            "FORKCAST_API_KEYS_FILE": str(keys_file),
            "FORKCAST_REQUEST_ID_KEY_FILE": str(request_id_key_file),
            "FORKCAST_RATE_PER_S": "100000",
            "FORKCAST_RATE_BURST": "100000",
            "FORKCAST_ACCESS_LOG": "false",
            "FORKCAST_LOG_LEVEL": "WARNING",
            # Generous, not production's 0.1 s / 0.05 s / 1 s: the shares count every request once, and on a
            # starved CI machine a connect timeout is a retry (counted twice) or a 503.
            "FORKCAST_REDIS_TIMEOUT_S": "5",
            "FORKCAST_CONNECT_TIMEOUT_S": "2",
            "FORKCAST_UPSTREAM_TIMEOUT_S": "10",
        }
        proc = spawn([str(BIN / "forkcast-gateway")], env=env, log=tmp_path / f"gateway-{port}.log")
        started.append(proc)
        wait_until(
            lambda: http_ok(f"http://127.0.0.1:{port}/readyz"), timeout_s=60, what="gateway", proc=proc
        )
        return port

    yield start
    for proc in started:
        stop(proc)


async def drive(port: int, n: int) -> list[int]:
    """``n`` requests for users u0…u{n-1} over CONNECTIONS keep-alive connections; their statuses."""
    conns = await connect([port], CONNECTIONS)
    statuses: list[int] = []

    async def worker(k: int) -> None:
        for i in range(k, n, CONNECTIONS):
            raw = (
                f"POST /recommend/u{i} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
                f"X-API-Key: {KEY}\r\nContent-Length: {len(BODY)}\r\n\r\n"
            ).encode() + BODY
            statuses.append(await conns[k].call(raw))

    await asyncio.gather(*(worker(k) for k in range(CONNECTIONS)))
    for c in conns:
        c.writer.close()
    return statuses


def shares_after(ports: dict[str, int], gateway_port: int) -> dict[str, float]:
    """Send REQUESTS through the gateway; each replica's share of them (from the replicas' own counts)."""
    before = hits(ports)
    statuses = asyncio.run(drive(gateway_port, REQUESTS))
    assert statuses.count(200) == REQUESTS, {s: statuses.count(s) for s in set(statuses)}
    after = hits(ports)
    got = {name: after[name] - before[name] for name in ports}
    assert sum(got.values()) == REQUESTS, got  # no retries, nothing lost or sent twice
    return {name: g / REQUESTS for name, g in got.items()}


def off_share(shares: dict[str, float], expected: dict[str, float]) -> list[str]:
    """The replicas whose share is not within TOLERANCE of what they should get, each with both figures."""
    return [
        f"{name}: {shares[name]:.2%} of requests, expected {want:.2%} ± {TOLERANCE:.0%}"
        for name, want in expected.items()
        if abs(shares[name] - want) > TOLERANCE * want
    ]


def test_each_replica_and_the_canary_pod_get_an_equal_share(
    replicas: dict[str, int], gateway: Callable[[str], int]
) -> None:
    """One group of five endpoints (the cluster's headless Service: four stable pods and one canary pod)."""
    gw = gateway(",".join(f"http://127.0.0.1:{p}" for p in replicas.values()))
    shares = shares_after(replicas, gw)
    off = off_share(shares, {name: 1 / len(replicas) for name in replicas})
    assert not off, off


def test_weighted_groups_give_the_canary_its_weight(
    replicas: dict[str, int], gateway: Callable[[str], int]
) -> None:
    """``stable*60`` over three replicas, ``canary*40`` over one: the canary 40 %, each stable replica 20 %."""
    stable = [n for n in NAMES if n.startswith("stable")][:3]
    spec = (
        "stable*60=" + ",".join(f"http://127.0.0.1:{replicas[n]}" for n in stable)
        + f";canary*40=http://127.0.0.1:{replicas['canary-0']}"
    )  # fmt: skip
    shares = shares_after(replicas, gateway(spec))
    expected = {**{n: 0.60 / 3 for n in stable}, "canary-0": 0.40}
    off = off_share(shares, expected)
    assert not off, off
    assert shares["stable-3"] == 0, "a replica outside FORKCAST_UPSTREAMS got requests"
