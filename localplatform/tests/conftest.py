"""Shared by the drill tests: one folder for the tiny dataset and the models trained on it, for the whole session.

The canary drills, the end-to-end drill and the fault drills each make what they need there once
(``rehearsal.releases.dataset`` / ``train`` keep what a folder already holds): the stable release every drill
starts from is trained one time per session, not once per drill.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny dataset and trained models, shared by every drill of the session."""
    return tmp_path_factory.mktemp("drill-cache")
