"""Fixtures for the generator tests: tiny datasets drawn into pytest's temporary directories."""

from __future__ import annotations

from pathlib import Path

import pytest

from forkcast_contract.dataset import DatasetSizes
from forkcast_data.generate import GenerateRequest
from forkcast_data.presets import preset_sizes

MICRO = DatasetSizes(
    users=500,
    restaurants=1_200,
    train_files=3,
    test_files=1,
    rows_per_file=2_000,
    requests=20,
    candidates=1_000,
)


@pytest.fixture
def micro_request(tmp_path: Path) -> GenerateRequest:
    """A very small dataset request: every code path of a run, in milliseconds."""
    return GenerateRequest(out=tmp_path / "data", preset="micro", sizes=MICRO, progress=False)


@pytest.fixture(scope="session")
def tiny_sizes() -> DatasetSizes:
    return preset_sizes("tiny")
