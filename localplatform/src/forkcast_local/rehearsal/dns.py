"""The headless Service of the rehearsal: a DNS server answering the Service's name with the READY pods' addresses.

In a cluster the gateway resolves the headless Service ``inference-pods`` (``FORKCAST_UPSTREAMS=dns+http://
inference-pods:8001``) and gets one A record per ready pod, stable and canary alike: Kubernetes publishes a pod's
address in a headless Service's DNS only while the pod is ready ("the Endpoints ... for headless Services ...
A records ... for the ready endpoints", https://kubernetes.io/docs/concepts/services-networking/
dns-pod-service/#services). Here each pod listens on its own 127.x.y.z address and this server gives the same answer,
so the gateway's own per-request balancing (forkcast_gateway.discovery) splits traffic by the share of ready pods,
as Argo Rollouts' basic canary does without a traffic router. It stands in for the cluster's DNS (CoreDNS), which every
cluster runs and the local platform does not: no rendered workload is a DNS server.

dnspython (already the gateway's resolver) parses and builds the messages; this module only decides the answer.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from forkcast_devservers.ports import free_port

# Zero TTL: every refresh of the gateway sees the current set (dnspython's resolver has no cache anyway).
TTL_S = 0


class ServiceDns:
    """A UDP DNS server on 127.0.0.1 for one name; ``set_addresses`` replaces the answer atomically."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = free_port()
        self._addresses: tuple[str, ...] = ()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", self.port))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"dns-{name}", daemon=True)
        self.queries = 0

    @property
    def server(self) -> str:
        """``HOST:PORT`` for the gateway's FORKCAST_DNS_SERVER."""
        return f"127.0.0.1:{self.port}"

    def set_addresses(self, addresses: Iterable[str]) -> None:
        self._addresses = tuple(sorted(set(addresses)))

    def start(self) -> ServiceDns:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()

    def answer(self, wire: bytes) -> bytes:
        """The response to one query: A records for the name (any search suffix after it), NXDOMAIN otherwise.

        No ready pod is an empty NOERROR answer, as for a headless Service without ready endpoints.
        """
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        for question in query.question:
            labels = [label.decode().lower() for label in question.name.labels if label]
            if not labels or labels[0] != self.name:
                response.set_rcode(dns.rcode.NXDOMAIN)
                continue
            if question.rdtype == dns.rdatatype.A and self._addresses:
                response.answer.append(
                    dns.rrset.from_text_list(
                        question.name, TTL_S, dns.rdataclass.IN, dns.rdatatype.A, self._addresses
                    )
                )
        return response.to_wire()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                wire, peer = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                reply = self.answer(wire)
            except Exception:  # a malformed packet is dropped, as a resolver would time out on it
                continue
            self.queries += 1
            self._sock.sendto(reply, peer)
