"""Garbage collection: delete old, never-promoted versions and abandoned uploads, keeping the newest few.

A version is made invisible first (its manifest is deleted before its files), so a reader racing gc sees either
a whole verified version or none. Promoted versions (those named in any release file, passed in as ``protect``)
are never deleted, whatever their age, so a rollback always has its target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from forkcast_contract.registry_format import MANIFEST_FILE, MODELS_PREFIX
from forkcast_registry.registry import ModelRegistry


@dataclass
class GcPlan:
    """What gc deletes and keeps, so ``--dry-run`` shows exactly what a real run would do."""

    delete_complete: list[str] = field(default_factory=list)
    delete_incomplete: list[str] = field(default_factory=list)
    keep: list[str] = field(default_factory=list)


def plan_gc(
    registry: ModelRegistry,
    keep: int,
    protect: set[str],
    incomplete_grace: timedelta = timedelta(hours=1),
    now: datetime | None = None,
) -> GcPlan:
    """Keep the ``keep`` newest complete versions and every protected one; drop stale incomplete uploads.

    Incomplete versions younger than ``incomplete_grace`` may be uploads in progress and are left alone.
    """
    if keep < 1:
        raise ValueError("keep must be >= 1: gc never deletes the newest version")
    now = now or datetime.now(UTC)
    listings = registry.scan()
    complete = [v.version for v in listings if v.complete]
    newest = set(complete[-keep:])
    plan = GcPlan()
    for v in complete:
        (plan.keep if v in newest or v in protect else plan.delete_complete).append(v)
    plan.delete_incomplete = [
        v.version for v in listings if not v.complete and now - v.last_modified > incomplete_grace
    ]
    return plan


def delete_version(registry: ModelRegistry, version: str) -> int:
    """Delete one version, manifest first; returns the number of objects deleted."""
    prefix = f"{MODELS_PREFIX}/{registry.model_name}/{version}/"
    keys = [k for k, _ in registry.store.list_keys(prefix)]
    keys.sort(key=lambda k: k != prefix + MANIFEST_FILE)  # the manifest first
    for key in keys:
        registry.store.delete(key)
    return len(keys)


def run_gc(registry: ModelRegistry, plan: GcPlan) -> int:
    return sum(delete_version(registry, v) for v in plan.delete_complete + plan.delete_incomplete)
