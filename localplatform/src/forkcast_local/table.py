"""The whole component table in start order: the core (stores, tracking, services), then monitoring."""

from __future__ import annotations

from forkcast_local.components import CORE_COMPONENTS, Component
from forkcast_local.observability import MONITORING_COMPONENTS

COMPONENTS: tuple[Component, ...] = CORE_COMPONENTS + MONITORING_COMPONENTS
