"""Upstream inference endpoints: weighted groups (stable / canary), sticky per user, each endpoint with a breaker.

``FORKCAST_UPSTREAMS`` is either a plain list ``http://a:8001,http://b:8001`` (one group, ``stable``, weight 100)
or groups ``stable*90=http://a:8001,http://b:8001;canary*10=http://c:8001``. A user is mapped to a group by a
hash of the user id (``u42`` and ``42`` are the same user), so one user sees one model while the split over all
users follows the weights, exactly as a Rollout step's setWeight says. Within a group, endpoints (replicas) are
taken in turn, request by request; the one retry after a connection failure goes to another endpoint of the same
group if it has one, else to another group (answering from another model beats failing the request).

A URL may also be ``dns+http://NAME:PORT``: NAME is resolved (``discovery.DnsDiscovery``, every
``FORKCAST_DNS_REFRESH_S``) and each A record becomes an endpoint ``http://ADDRESS:PORT`` of that group. Pointed at
a headless Service (one A record per ready pod), every request goes to the next pod in turn, so a canary's share
of requests is its share of ready pods, and a pod the answer no longer names gets no new request.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import count
from urllib.parse import urlsplit

from forkcast_gateway.breaker import CircuitBreaker


class UpstreamConfigError(ValueError):
    pass


@dataclass
class Endpoint:
    group: str
    base: str
    breaker: CircuitBreaker


@dataclass(frozen=True)
class DnsName:
    """``dns+http://host:port``: the endpoints of a group are ``http://<each A record of host>:port``."""

    host: str
    port: int

    def base(self, address: str) -> str:
        return f"http://{address}:{self.port}"


@dataclass
class Group:
    name: str
    weight: int
    endpoints: list[Endpoint]
    dns: list[DnsName] = field(default_factory=list)
    breaker_failures: int = 5
    breaker_open_s: float = 2.0
    # Addresses last resolved per DNS name: what set_resolved replaces when the answer changes.
    resolved: dict[DnsName, list[str]] = field(default_factory=dict)
    _turn: count[int] = field(default_factory=count)

    def ordered(self) -> list[Endpoint]:
        """Endpoints starting at the next in turn (round robin), so the retry lands on a different one."""
        n = len(self.endpoints)
        if n == 0:  # a DNS group before its first answer
            return []
        start = next(self._turn) % n
        return self.endpoints[start:] + self.endpoints[:start]

    def set_resolved(self, name: DnsName, addresses: list[str]) -> tuple[list[str], list[str]]:
        """Make ``name``'s endpoints those of ``addresses``; returns the bases (added, removed).

        An endpoint whose address is still in the answer is kept as it is (its breaker state and, in the forwarder's
        connector, its pooled keep-alive connections); one no longer named is dropped, so it gets no new request.
        """
        old = {name.base(a) for a in self.resolved.get(name, [])}
        new = {name.base(a) for a in addresses}
        added, removed = sorted(new - old), sorted(old - new)
        self.resolved[name] = sorted(set(addresses))
        kept = [e for e in self.endpoints if e.base not in removed]
        kept += [
            Endpoint(self.name, b, CircuitBreaker(self.breaker_failures, self.breaker_open_s)) for b in added
        ]
        self.endpoints = kept  # one assignment: a request in flight keeps the list it took
        return added, removed


def _source(text: str) -> str | DnsName:
    raw = text.strip()
    url = urlsplit(raw)
    if url.scheme == "dns+http":
        try:
            port = url.port or 80
        except ValueError:
            raise UpstreamConfigError(f"upstream {text!r}: bad port") from None
        if not url.hostname or url.path not in ("", "/"):
            raise UpstreamConfigError(f"upstream {text!r} is not a dns+http://name:port URL")
        return DnsName(url.hostname, port)
    if url.scheme.startswith("dns+"):
        # Resolved addresses are dialled by IP: TLS could not verify the name (and in-cluster calls are plain HTTP).
        raise UpstreamConfigError(f"upstream {text!r}: only dns+http:// is supported for DNS endpoints")
    if url.scheme not in ("http", "https") or not url.hostname or url.path not in ("", "/"):
        raise UpstreamConfigError(f"upstream {text!r} is not an http(s)://host:port URL")
    return f"{url.scheme}://{url.netloc}"


def parse_upstreams(spec: str, failures: int, open_s: float) -> list[Group]:
    groups: list[Group] = []
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        if "=" in part and "*" in part.split("=", 1)[0]:
            head, urls = part.split("=", 1)
            name, weight_text = head.split("*", 1)
            try:
                weight = int(weight_text)
            except ValueError:
                raise UpstreamConfigError(
                    f"weight {weight_text!r} of group {name!r} is not an integer"
                ) from None
        elif ";" not in spec and "=" not in part:
            name, weight, urls = "stable", 100, part
        else:
            raise UpstreamConfigError(f"upstream group {part!r} is not NAME*WEIGHT=URL[,URL…]")
        name = name.strip()
        if not name or weight < 0:
            raise UpstreamConfigError(f"upstream group {part!r}: empty name or negative weight")
        sources = [_source(u) for u in urls.split(",") if u.strip()]
        if not sources:
            raise UpstreamConfigError(f"upstream group {name!r} has no URL")
        static = [Endpoint(name, s, CircuitBreaker(failures, open_s)) for s in sources if isinstance(s, str)]
        dns = [s for s in sources if isinstance(s, DnsName)]
        groups.append(Group(name, weight, static, dns, failures, open_s))
    if not groups or sum(g.weight for g in groups) <= 0:
        raise UpstreamConfigError("FORKCAST_UPSTREAMS names no upstream with a positive weight")
    if len({g.name for g in groups}) != len(groups):
        raise UpstreamConfigError("FORKCAST_UPSTREAMS names a group twice")
    return groups


def user_bucket(user_text: str) -> int:
    """A stable number in [0, 10000) for a user: blake2b of the canonical id (digits without the `u`, no zeros)."""
    digits = user_text.removeprefix("u").lstrip("0") or "0"
    return int.from_bytes(hashlib.blake2b(digits.encode(), digest_size=8).digest(), "big") % 10_000


class Upstreams:
    def __init__(self, groups: list[Group]) -> None:
        self.groups = groups
        # Called by the forwarder after a connection failure: DnsDiscovery sets it to "re-resolve now", since a
        # refused connection is how a pod that just went away usually shows first.
        self.refresh_wanted: Callable[[], None] = lambda: None
        total = sum(g.weight for g in groups)
        # Cumulative bounds in basis points: group i serves buckets [bounds[i-1], bounds[i]).
        self.bounds: list[int] = []
        acc = 0
        for g in groups:
            acc += g.weight
            self.bounds.append(acc * 10_000 // total)

    @property
    def endpoints(self) -> list[Endpoint]:
        return [e for g in self.groups for e in g.endpoints]

    @property
    def dns_names(self) -> list[tuple[Group, DnsName]]:
        return [(g, d) for g in self.groups for d in g.dns]

    def group_for(self, user_text: str) -> Group:
        b = user_bucket(user_text)
        for g, bound in zip(self.groups, self.bounds, strict=True):
            if b < bound:
                return g
        return self.groups[-1]

    def candidates(self, user_text: str) -> list[Endpoint]:
        """Endpoints to try in order: the user's group first (round robin), then the other groups."""
        if len(self.groups) == 1:  # no split to make: skip the user's hash (the usual one-group DNS upstream)
            return self.groups[0].ordered()
        home = self.group_for(user_text)
        rest = [e for g in self.groups if g is not home for e in g.ordered()]
        return home.ordered() + rest
