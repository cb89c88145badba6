"""Fixtures of the wiring-check tests: each overlay rendered once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from forkcast_delivery.context import Context, build, shared_docs

ROOT = Path(__file__).resolve().parents[3]
OVERLAYS = ("dev", "prod", "local")


@pytest.fixture(scope="session")
def contexts() -> dict[str, Context]:
    shared = shared_docs(ROOT)
    return {name: build(ROOT, ROOT / "manifests" / "overlays" / name, shared) for name in OVERLAYS}
