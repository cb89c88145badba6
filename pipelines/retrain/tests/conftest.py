"""Fixtures for the retrain tests: tiny datasets drawn into pytest's temporary directories (well under a second)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from forkcast_contract.dataset import DatasetSizes
from forkcast_data.testing import generate_dataset, tiny_data

__all__ = ["tiny_data"]  # the shared session fixture, re-exported for this folder's tests

MICRO = DatasetSizes(
    users=500, restaurants=300, train_files=3, test_files=1, rows_per_file=4_000, requests=5, candidates=100
)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    """One torch thread for the whole suite.

    On the shared 2-core VM two OpenMP threads stall whenever another process takes a core (measured: the tiny
    3-epoch pipeline test took 24 s under load instead of 0.5 s); one thread keeps the suite's time steady. The
    training code itself still defaults to all cores (see train.default_threads).
    """
    torch.set_num_threads(1)


@pytest.fixture
def micro_data(tmp_path: Path) -> Path:
    """A fresh very small dataset that a test may damage (bad-input tests)."""
    return generate_dataset(tmp_path / "data", "micro", sizes=MICRO)
