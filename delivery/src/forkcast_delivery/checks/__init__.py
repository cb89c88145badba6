"""The wiring checks over a rendered overlay. Each module checks one kind of arrow of the system and returns
``Problem``s that name the object and the reason; ``RULES`` is the order the CLI runs them in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from forkcast_delivery.context import Context


@dataclass(frozen=True, order=True)
class Problem:
    rule: str
    subject: str  # Kind/name of the object at fault
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.subject}: {self.message}"


Check = Callable[[Context], list[Problem]]


def rules() -> dict[str, Check]:
    from forkcast_delivery.checks import argocd, commands, env, metrics, network, references, services

    return {
        "commands": commands.check,
        "services": services.check,
        "references": references.check,
        "env": env.check,
        "metrics": metrics.check,
        "network": network.check,
        "argocd": argocd.check,
    }
