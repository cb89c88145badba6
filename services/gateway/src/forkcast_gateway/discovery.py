"""Keep the endpoints of ``dns+http://NAME:PORT`` upstreams equal to NAME's A records, re-resolved every few seconds.

Why: inference runs as an Argo Rollout without a traffic router, so a canary's weight is its share of pods. Through
a ClusterIP Service that share never reaches the gateway's requests: kube-proxy picks a pod per *connection*, and
the gateway's pooled keep-alive connections stay on the pods that existed when they were opened (issue 15, point
6). Resolving the headless Service ``inference-pods`` (one A record per ready pod) and taking the pods in turn per
request gives every ready pod, canary or stable, the same share within one refresh period of its readiness.

Failure handling: a failed or empty answer keeps the last good set (pods do not vanish because DNS hiccuped; their
breakers still guard them) and is retried after ``retry_s``; a connection failure in the forwarder asks for an
early refresh (at most one per ``retry_s``). dnspython's resolver has no cache, so every refresh asks the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import dns.asyncresolver
import dns.exception
import dns.resolver

from forkcast_gateway.upstreams import DnsName, Group, Upstreams

log = logging.getLogger("forkcast_gateway.discovery")


def make_resolver(server: str | None, timeout_s: float) -> dns.asyncresolver.Resolver:
    """The system resolver (/etc/resolv.conf: kube-dns and the namespace's search domains), or ``HOST[:PORT]``."""
    if server is None:
        resolver = dns.asyncresolver.Resolver()
    else:
        host, _, port = server.rpartition(":") if server.count(":") == 1 else (server, "", "")
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [host]
        resolver.port = int(port) if port else 53
    resolver.lifetime = timeout_s
    resolver.timeout = timeout_s
    return resolver


class DnsDiscovery:
    """Re-resolves every DNS name of ``upstreams`` each ``refresh_s`` (and soon after a connection failure)."""

    def __init__(
        self,
        upstreams: Upstreams,
        resolver: dns.asyncresolver.Resolver,
        refresh_s: float,
        retry_s: float,
        on_removed: Callable[[str], None] = lambda base: None,
    ) -> None:
        self.upstreams, self.resolver, self.on_removed = upstreams, resolver, on_removed
        self.refresh_s, self.retry_s = refresh_s, retry_s
        self.failures = 0  # consecutive failed refreshes (any name), for the log and the tests
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_wake = 0.0
        upstreams.refresh_wanted = self.wake

    def wake(self) -> None:
        """Ask for a refresh now, unless one was asked for less than ``retry_s`` ago."""
        now = time.monotonic()
        if now - self._last_wake >= self.retry_s:
            self._last_wake = now
            self._wake.set()

    async def resolve(self, name: DnsName) -> list[str]:
        """NAME's IPv4 addresses; raises dns.exception.DNSException when there is no usable answer."""
        # search=True: a short name such as `inference-pods` is tried with the pod's search domains, as libc does.
        answer = await self.resolver.resolve(name.host, "A", search=True)
        return sorted({rr.address for rr in answer})

    async def refresh(self) -> bool:
        """Resolve every name once; True when all answered. A failed name keeps its last good endpoints."""
        ok = True
        for group, name in self.upstreams.dns_names:
            try:
                addresses = await self.resolve(name)
            except (dns.exception.DNSException, OSError) as exc:
                ok = False
                kept = len(group.resolved.get(name, []))
                log.warning("resolving %s failed (%s); keeping its %d endpoints", name.host, exc, kept)
                continue
            self._apply(group, name, addresses)
        self.failures = 0 if ok else self.failures + 1
        return ok

    def _apply(self, group: Group, name: DnsName, addresses: list[str]) -> None:
        added, removed = group.set_resolved(name, addresses)
        for base in removed:
            self.on_removed(base)
        if added or removed:
            log.info("%s: %d endpoints (+%s -%s)", name.host, len(addresses), added, removed)

    async def start(self) -> None:
        """First resolution before serving (so the first requests have endpoints), then the refresh loop."""
        if not self.upstreams.dns_names:
            return
        await self.refresh()
        self._task = asyncio.create_task(self._loop(), name="dns-discovery")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            delay = self.refresh_s if self.failures == 0 else min(self.refresh_s, self.retry_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            self._wake.clear()
            try:
                await self.refresh()
            except Exception:  # never let the loop die: the last good endpoints keep serving
                log.exception("DNS refresh failed unexpectedly")
                self.failures += 1
