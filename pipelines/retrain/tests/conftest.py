"""Fixtures for the retrain tests: tiny datasets drawn into pytest's temporary directories (well under a second)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from forkcast_contract.dataset import DatasetSizes
from forkcast_data.generate import GenerateRequest, generate
from forkcast_data.presets import preset_sizes

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


def _generate(out: Path, preset: str, sizes: DatasetSizes) -> Path:
    generate(GenerateRequest(out=out, preset=preset, sizes=sizes, progress=False), log=lambda _: None)
    return out


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``tiny`` preset (200 k train rows, 50 k test rows): shared, never modified by tests."""
    return _generate(tmp_path_factory.mktemp("tiny") / "data", "tiny", preset_sizes("tiny"))


@pytest.fixture
def micro_data(tmp_path: Path) -> Path:
    """A fresh very small dataset that a test may damage (bad-input tests)."""
    return _generate(tmp_path / "data", "micro", MICRO)
