"""Per-request balancing over DNS-discovered endpoints (``dns+http://``), against a real DNS server and real HTTP
upstreams on loopback: a small UDP DNS server (dnspython's wire format) answers the name with several 127.0.0.x
addresses (all of 127/8 is loopback on Linux), and one stand-in upstream listens on each address, same port.

What is shown: each endpoint's share of requests is 1/N within ``TOLERANCE``; when the answer gains a "canary"
address, the canary gets its 1/(N+1) although the gateway's keep-alive connections to the others are pooled and
warm; an address the answer drops gets no new request; a failing DNS server leaves the last good set serving.
The twin: a gateway that does not re-resolve in time leaves the canary starved, and the share check names it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
import requests

from forkcast_devservers.ports import free_port
from forkcast_gateway.breaker import CircuitBreaker
from forkcast_gateway.edge import Edge
from forkcast_gateway.testing import KEY, StandIn, serve
from forkcast_gateway.upstreams import DnsName, UpstreamConfigError, parse_upstreams

NAME = "inference-pods.test"
BODY = b'{"candidate_restaurant_ids":[1],"latitude":1.0,"longitude":1.0}'
# Round robin per request makes the shares exact up to one request per endpoint; two percentage points leave room
# for the requests in flight while the endpoint set changes, and still fail a canary starved below 18 % of 20 %.
TOLERANCE = 0.02
REQUESTS = 600


class DnsStub:
    """A UDP DNS server on 127.0.0.1: A records of ``answers[name]``; SERVFAIL for everything while ``failing``."""

    def __init__(self) -> None:
        self.answers: dict[str, list[str]] = {}
        self.failing = False
        self.queries = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = int(self.sock.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                wire, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(wire)
            self.queries += 1
            reply = dns.message.make_response(query)
            reply.flags |= dns.flags.AA
            question = query.question[0]
            name = question.name.to_text(omit_final_dot=True)
            if self.failing:
                reply.set_rcode(dns.rcode.SERVFAIL)
            elif name not in self.answers:
                reply.set_rcode(dns.rcode.NXDOMAIN)
            elif question.rdtype == dns.rdatatype.A:
                reply.answer.append(dns.rrset.from_text_list(question.name, 0, "IN", "A", self.answers[name]))
            self.sock.sendto(reply.to_wire(), peer)

    def __enter__(self) -> DnsStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def shared_port(addresses: list[str]) -> int:
    """A TCP port free on every one of ``addresses`` (each upstream binds its own loopback address)."""
    for _ in range(50):
        port = free_port()  # free on 127.0.0.1; the others are tried below
        try:
            with contextlib.ExitStack() as stack:
                for a in addresses:
                    sock = stack.enter_context(socket.socket())
                    sock.bind((a, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no port free on every loopback address")


def send(gw: str, n: int, workers: int = 8) -> None:
    """``n`` requests from ``workers`` concurrent clients: the gateway keeps several pooled connections busy."""

    def one(i: int) -> int:
        return requests.post(
            f"{gw}/recommend/u{i}", data=BODY, headers={"x-api-key": KEY}, timeout=5
        ).status_code

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        codes = list(pool.map(one, range(n)))
    assert codes == [200] * n, {c: codes.count(c) for c in set(codes)}


def shares(upstreams: dict[str, StandIn], before: dict[str, int]) -> dict[str, float]:
    """Each endpoint's share of the requests it got since ``before`` (hit counts)."""
    got = {a: len(s.hits) - before.get(a, 0) for a, s in upstreams.items()}
    total = sum(got.values())
    return {a: g / total for a, g in got.items()}


def share_violations(got: dict[str, float], expected: dict[str, float], tolerance: float) -> list[str]:
    """One line per endpoint whose share is outside ``expected ± tolerance``, naming the endpoint."""
    return [
        f"{a} got {got.get(a, 0.0):.3f} of the requests, expected {want:.3f} ± {tolerance}"
        for a, want in sorted(expected.items())
        if abs(got.get(a, 0.0) - want) > tolerance
    ]


def state(gw: Edge) -> Any:
    """The FastAPI app's state behind the Edge (forwarder, discovery)."""
    return cast(Any, gw.app).state


def wait_for_endpoints(gw: Edge, port: int, addresses: list[str], timeout_s: float = 30.0) -> None:
    """Until the gateway's endpoints are exactly ``addresses`` (its discovery has applied the answer); 30 s, as a
    starved CI machine may take long, and a discovery that never applies it still fails."""
    want = sorted(f"http://{a}:{port}" for a in addresses)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sorted(e.base for e in state(gw).forwarder.upstreams.endpoints) == want:
            return
        time.sleep(0.02)
    got = sorted(e.base for e in state(gw).forwarder.upstreams.endpoints)
    raise AssertionError(f"the gateway's endpoints are {got}, not {want}")


STABLE = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
CANARY = "127.0.0.6"


@pytest.fixture
def pods() -> Iterator[tuple[int, dict[str, StandIn]]]:
    """One stand-in inference pod per address in STABLE + CANARY, all on one port."""
    port = shared_port([*STABLE, CANARY])
    stand_ins = {a: StandIn(name=a) for a in [*STABLE, CANARY]}
    with contextlib.ExitStack() as stack:
        for a, s in stand_ins.items():
            stack.enter_context(serve(s, port=port, host=a))
        yield port, stand_ins


@pytest.fixture
def dns_gateway(
    make_gateway: Callable[..., Edge], pods: tuple[int, dict[str, StandIn]]
) -> Iterator[Callable[..., tuple[DnsStub, Edge, str]]]:
    """Start a DNS stub answering NAME with STABLE and a gateway on ``dns+http://NAME:port`` using it."""
    port, _ = pods
    with contextlib.ExitStack() as stack:

        def start(**overrides: object) -> tuple[DnsStub, Edge, str]:
            stub = stack.enter_context(DnsStub())
            stub.answers[NAME] = list(STABLE)
            settings = {
                "upstreams": f"dns+http://{NAME}:{port}",
                "dns_server": f"127.0.0.1:{stub.port}",
                "dns_refresh_s": 0.2,
                "dns_retry_s": 0.1,
                **overrides,
            }
            gw = make_gateway(**settings)
            url = stack.enter_context(serve(gw))
            return stub, gw, url

        yield start


def test_every_resolved_endpoint_gets_an_equal_share(
    dns_gateway: Callable[..., tuple[DnsStub, Edge, str]], pods: tuple[int, dict[str, StandIn]]
) -> None:
    port, upstreams = pods
    _, gw, url = dns_gateway()
    wait_for_endpoints(gw, port, STABLE)
    send(url, REQUESTS)
    got = shares(upstreams, {})
    assert share_violations(got, {a: 1 / len(STABLE) for a in STABLE} | {CANARY: 0.0}, TOLERANCE) == []


def test_a_canary_added_to_the_answer_gets_its_share_despite_pooled_connections(
    dns_gateway: Callable[..., tuple[DnsStub, Edge, str]], pods: tuple[int, dict[str, StandIn]]
) -> None:
    port, upstreams = pods
    stub, gw, url = dns_gateway()
    wait_for_endpoints(gw, port, STABLE)
    send(url, 200)  # warm: keep-alive connections to the four stable pods are pooled
    stub.answers[NAME] = [*STABLE, CANARY]
    wait_for_endpoints(gw, port, [*STABLE, CANARY])
    before = {a: len(s.hits) for a, s in upstreams.items()}
    send(url, REQUESTS)
    everyone = [*STABLE, CANARY]
    assert share_violations(shares(upstreams, before), {a: 1 / 5 for a in everyone}, TOLERANCE) == []

    # A pod leaving the answer (scaled down, or no longer ready) gets no new request; the rest share equally.
    gone = STABLE[0]
    stub.answers[NAME] = [a for a in everyone if a != gone]
    wait_for_endpoints(gw, port, [a for a in everyone if a != gone])
    before = {a: len(s.hits) for a, s in upstreams.items()}
    send(url, REQUESTS)
    expected = {a: (0.0 if a == gone else 1 / 4) for a in everyone}
    assert share_violations(shares(upstreams, before), expected, TOLERANCE) == []
    assert len(upstreams[gone].hits) == before[gone]


def test_twin_a_gateway_that_does_not_re_resolve_starves_the_canary(
    dns_gateway: Callable[..., tuple[DnsStub, Edge, str]], pods: tuple[int, dict[str, StandIn]]
) -> None:
    """The check above, fed by a gateway whose refresh period (60 s) outlasts the wait: it names the canary."""
    port, upstreams = pods
    stub, gw, url = dns_gateway(dns_refresh_s=60.0)
    wait_for_endpoints(gw, port, STABLE)
    send(url, 200)
    stub.answers[NAME] = [*STABLE, CANARY]
    time.sleep(1.0)  # five refresh periods of the gateway above
    before = {a: len(s.hits) for a, s in upstreams.items()}
    send(url, REQUESTS)
    violations = share_violations(shares(upstreams, before), {a: 1 / 5 for a in [*STABLE, CANARY]}, TOLERANCE)
    assert any(v.startswith(f"{CANARY} got 0.000") for v in violations), violations


def test_a_failing_dns_server_keeps_the_last_good_endpoints(
    dns_gateway: Callable[..., tuple[DnsStub, Edge, str]], pods: tuple[int, dict[str, StandIn]]
) -> None:
    port, upstreams = pods
    stub, gw, url = dns_gateway()
    wait_for_endpoints(gw, port, STABLE)
    stub.failing = True
    asked = stub.queries
    # Polled (every 0.1 s it asks again), not a fixed 1 s sleep, which a starved CI machine could outlast.
    deadline = time.monotonic() + 30
    while not (stub.queries > asked + 2 and state(gw).discovery.failures) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stub.queries > asked + 2, "the gateway kept asking while the server failed"
    assert state(gw).discovery.failures > 0
    wait_for_endpoints(gw, port, STABLE, timeout_s=0.1)
    send(url, REQUESTS)
    assert share_violations(shares(upstreams, {}), {a: 1 / 4 for a in STABLE}, TOLERANCE) == []
    stub.failing = False  # recovered: the next refresh succeeds again
    deadline = time.monotonic() + 30  # 30 s, not 5 s: for a starved CI machine
    while state(gw).discovery.failures and time.monotonic() < deadline:
        time.sleep(0.05)
    assert state(gw).discovery.failures == 0


def test_dns_upstream_urls_parse_into_names_and_refuse_what_cannot_work() -> None:
    (group,) = parse_upstreams("dns+http://inference-pods:8001", 5, 1.0)
    assert group.name == "stable" and group.endpoints == [] and group.dns == [DnsName("inference-pods", 8001)]
    (mixed,) = parse_upstreams("pods*100=dns+http://inference-pods:8001,http://10.0.0.9:8001", 5, 1.0)
    assert [e.base for e in mixed.endpoints] == ["http://10.0.0.9:8001"]
    with pytest.raises(UpstreamConfigError, match="only dns\\+http://"):
        parse_upstreams("dns+https://inference-pods:8443", 5, 1.0)
    with pytest.raises(UpstreamConfigError, match="not a dns\\+http://name:port URL"):
        parse_upstreams("dns+http://inference-pods:8001/v1", 5, 1.0)


def test_set_resolved_keeps_surviving_endpoints_and_their_breakers() -> None:
    (group,) = parse_upstreams("dns+http://pods:8001", 2, 60.0)
    name = group.dns[0]
    added, removed = group.set_resolved(name, ["10.0.0.2", "10.0.0.1"])
    assert (added, removed) == (["http://10.0.0.1:8001", "http://10.0.0.2:8001"], [])
    survivor = next(e for e in group.endpoints if e.base == "http://10.0.0.2:8001")
    breaker: CircuitBreaker = survivor.breaker
    breaker.failure()
    added, removed = group.set_resolved(name, ["10.0.0.2", "10.0.0.3"])
    assert (added, removed) == (["http://10.0.0.3:8001"], ["http://10.0.0.1:8001"])
    assert [e.base for e in group.endpoints] == ["http://10.0.0.2:8001", "http://10.0.0.3:8001"]
    assert group.endpoints[0] is survivor and survivor.breaker.failures == 1
