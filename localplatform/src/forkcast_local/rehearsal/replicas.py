"""Argo Rollouts' basic-canary replica arithmetic (no traffic router): how many canary and stable pods to run.

Ported from github.com/argoproj/argo-rollouts utils/replicaset/canary.go, function by function, so a drill runs
exactly the pod counts the controller would: ``approximate_counts`` = approximateWeightedCanaryStableReplicaCounts,
``basic_canary_counts`` = CalculateReplicaCountsForBasicCanary (scale-up within maxSurge, stable first; scale-down
within maxUnavailable, older ReplicaSets first), ``at_desired_counts`` = AtDesiredReplicaCountsForCanary. Without a
router the canary's share of traffic is its share of ready pods.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from forkcast_local.rehearsal.spec import RolloutSpec, int_or_percent

MAX_WEIGHT = 100  # weightutil.MaxTrafficWeight without a traffic router


@dataclass(frozen=True)
class ReplicaSet:
    """What the arithmetic reads of a ReplicaSet: ``.spec.replicas`` and ``.status.availableReplicas``."""

    replicas: int
    available: int


def fenceposts(spec: RolloutSpec) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) in pods: surge rounded up, unavailable down, and 1 unavailable when both are 0
    (utils/replicaset/replicaset.go resolveFenceposts, MaxSurge, MaxUnavailable)."""
    surge = int_or_percent(spec.max_surge, spec.replicas, round_up=True)
    unavailable = int_or_percent(spec.max_unavailable, spec.replicas, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, min(unavailable, spec.replicas)


def _tied(weight: int, total: int) -> bool:
    """floorCeilingTied: ceil and floor canary counts equally far from the weight (the larger is taken)."""
    return math.modf(total * (weight / MAX_WEIGHT))[0] == 0.5


def approximate_counts(replicas: int, weight: int, max_surge: int) -> tuple[int, int]:
    """(canary, stable) closest to ``weight``: out of replicas or replicas + 1 (surge), never 0 canary pods for a
    weight of 1-99 when 2+ pods run (approximateWeightedCanaryStableReplicaCounts)."""
    if replicas == 0:
        return 0, 0
    ceil_c = math.ceil(replicas * weight / MAX_WEIGHT)
    floor_c = math.floor(replicas * weight / MAX_WEIGHT)
    zero_allowed = weight in (0, MAX_WEIGHT) or (replicas == 1 and max_surge == 0)
    options: list[tuple[int, int]] = []
    if ceil_c < replicas or zero_allowed:
        options.append((ceil_c, replicas))
    if not _tied(weight, replicas) and (floor_c != 0 or zero_allowed):
        options.append((floor_c, replicas))
    if max_surge > 0:
        options.append((ceil_c, replicas + 1))
        if not _tied(weight, replicas + 1) and (floor_c != 0 or zero_allowed):
            options.append((floor_c, replicas + 1))
    if not options:
        return 0, replicas
    best = options[0]
    for option in options[1:]:  # weightDelta strictly smaller replaces, as in the Go loop
        if abs(option[0] * MAX_WEIGHT / option[1] - weight) < abs(best[0] * MAX_WEIGHT / best[1] - weight):
            best = option
    return best[0], best[1] - best[0]


def _scale_down_basis(rs: ReplicaSet | None, ignore_availability: bool) -> int:
    """GetReplicasForScaleDown."""
    if rs is None:
        return 0
    if rs.replicas < rs.available or ignore_availability:
        return rs.replicas
    return rs.available


def _adjust_within_limits(
    drain: ReplicaSet | None,
    adjust: ReplicaSet | None,
    drain_n: int,
    adjust_n: int,
    max_total: int,
    min_avail: int,
) -> tuple[int, int]:
    """adjustReplicaWithinLimits: keep the pair within maxSurge without dropping below the minimum available."""
    over = max(0, adjust_n + drain_n - max_total)
    available = min(drain.available, drain_n) if drain is not None else 0
    if adjust is not None:
        adjust_n -= over
        available += min(adjust.available, adjust_n)
        extra = max(0, adjust.available - adjust_n)
        adjust_n += min(extra, max(0, min_avail - available))
        drain_n -= max(0, adjust_n + drain_n - max_total)
    return drain_n, adjust_n


def basic_canary_counts(
    spec: RolloutSpec, weight: int, new: ReplicaSet | None, stable: ReplicaSet | None, older: int = 0
) -> tuple[int, int]:
    """(new, stable) ``.spec.replicas`` for this reconcile toward ``weight`` (CalculateReplicaCountsForBasicCanary).

    ``stable`` is None when there is no stable ReplicaSet distinct from the new one (then the new one goes to 100 %);
    ``older`` is the replica count of any other ReplicaSets still around.
    """
    replicas = spec.replicas
    surge, unavailable = fenceposts(spec)
    want_new, want_stable = approximate_counts(replicas, weight, surge)
    new_n = new.replicas if new is not None else 0
    stable_n = 0
    if stable is not None:
        stable_n = stable.replicas
    else:
        want_new, want_stable = replicas, 0
    max_total = replicas + surge
    scale_up = max_total - (older + new_n + stable_n)
    if stable is not None and stable.replicas < want_stable and scale_up > 0:
        if stable.replicas + scale_up < want_stable:
            stable_n, scale_up = stable.replicas + scale_up, 0
        else:
            stable_n, scale_up = want_stable, scale_up - (want_stable - stable.replicas)
    if new is not None and new.replicas < want_new and scale_up > 0:
        new_n = min(new.replicas + scale_up, want_new)
    if older > 0:
        return new_n, stable_n  # older ReplicaSets are scaled down first
    min_available = replicas - unavailable
    increasing = new is None or want_new >= new.replicas
    to_scale_down = _scale_down_basis(new, not increasing) + _scale_down_basis(stable, increasing)
    if to_scale_down <= min_available:
        return new_n, stable_n
    scale_down = to_scale_down - min_available
    if not increasing:
        if new is not None and new.replicas > want_new:
            new_n = max(want_new, new.replicas - scale_down)
        new_n, stable_n = _adjust_within_limits(new, stable, new_n, stable_n, max_total, min_available)
    elif stable is not None:
        if stable.replicas > want_stable:
            stable_n = max(want_stable, stable.replicas - scale_down)
        stable_n, new_n = _adjust_within_limits(stable, new, stable_n, new_n, max_total, min_available)
    return new_n, stable_n


def at_desired_counts(
    spec: RolloutSpec,
    weight: int,
    new: ReplicaSet | None,
    stable: ReplicaSet | None,
    older_available: int = 0,
) -> bool:
    """AtDesiredReplicaCountsForCanary without a router: every desired canary pod available, the stable at its
    desired size, and no older ReplicaSet still serving."""
    surge, _ = fenceposts(spec)
    want_new, want_stable = approximate_counts(spec.replicas, weight, surge)
    if stable is None:
        want_new, want_stable = spec.replicas, 0
    new_ok = new is not None and new.replicas == want_new and new.available == want_new
    stable_ok = stable is None or stable.replicas == want_stable
    return new_ok and stable_ok and older_available == 0
