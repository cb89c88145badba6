"""The wiring checks over a rendered overlay. Each module checks one kind of arrow of the system and returns
``Problem``s that name the object and the reason; ``RULES`` is the order the CLI runs them in."""

from __future__ import annotations

from forkcast_delivery.checks import argocd, commands, env, metrics, network, references, services
from forkcast_delivery.checks.problem import Check, Problem

__all__ = ["Check", "Problem", "rules"]


def rules() -> dict[str, Check]:
    return {
        "commands": commands.check,
        "services": services.check,
        "references": references.check,
        "env": env.check,
        "metrics": metrics.check,
        "network": network.check,
        "argocd": argocd.check,
    }
