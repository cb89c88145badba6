"""Upstream inference endpoints: weighted groups (stable / canary), sticky per user, each endpoint with a breaker.

``FORKCAST_UPSTREAMS`` is either a plain list ``http://a:8001,http://b:8001`` (one group, ``stable``, weight 100)
or groups ``stable*90=http://a:8001,http://b:8001;canary*10=http://c:8001``. A user is mapped to a group by a
hash of the user id (``u42`` and ``42`` are the same user), so one user sees one model while the split over all
users follows the weights, exactly as a Rollout step's setWeight says. Within a group, endpoints (replicas) are
taken in turn; the one retry after a connection failure goes to another endpoint of the same group if it has one,
else to another group (answering from another model beats failing the request).
"""

from __future__ import annotations

import hashlib
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


@dataclass
class Group:
    name: str
    weight: int
    endpoints: list[Endpoint]
    _turn: count[int] = field(default_factory=count)

    def ordered(self) -> list[Endpoint]:
        """Endpoints starting at the next in turn (round robin), so the retry lands on a different one."""
        n = len(self.endpoints)
        start = next(self._turn) % n
        return self.endpoints[start:] + self.endpoints[:start]


def _base(text: str) -> str:
    url = urlsplit(text.strip())
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
        bases = [_base(u) for u in urls.split(",") if u.strip()]
        if not bases:
            raise UpstreamConfigError(f"upstream group {name!r} has no URL")
        groups.append(
            Group(name, weight, [Endpoint(name, b, CircuitBreaker(failures, open_s)) for b in bases])
        )
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

    def group_for(self, user_text: str) -> Group:
        b = user_bucket(user_text)
        for g, bound in zip(self.groups, self.bounds, strict=True):
            if b < bound:
                return g
        return self.groups[-1]

    def candidates(self, user_text: str) -> list[Endpoint]:
        """Endpoints to try in order: the user's group first (round robin), then the other groups."""
        home = self.group_for(user_text)
        rest = [e for g in self.groups if g is not home for e in g.ordered()]
        return home.ordered() + rest
