"""What every wiring check returns: a ``Problem`` naming the rule, the object at fault and the reason.

Its own module (not the package's ``__init__``), so that the check modules and the package that lists them import
it without importing each other in a circle.
"""

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
