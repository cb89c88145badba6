"""Generated datasets for other packages' tests: one quiet way to draw a preset, and the shared ``tiny_data`` fixture.

Imported by test code only (extra ``testing`` brings pytest, for the fixture decorator; no image installs it); a
conftest re-exports ``tiny_data`` by importing it. Every test that needs a dataset on disk draws it through
:func:`generate_dataset`, so a change to the generator's request reaches them all.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from forkcast_contract.dataset import DatasetSizes
from forkcast_data.generate import GenerateRequest, generate
from forkcast_data.presets import preset_sizes

__all__ = ["generate_dataset", "tiny_data"]


def generate_dataset(
    out: Path, preset: str = "tiny", *, sizes: DatasetSizes | None = None, drift: float = 0.0
) -> Path:
    """The SPEC §2 files of ``preset`` (its sizes unless ``sizes``) in ``out``, with no progress output."""
    request = GenerateRequest(
        out=out, preset=preset, sizes=sizes or preset_sizes(preset), drift=drift, progress=False
    )
    generate(request, log=lambda _msg: None)
    return out


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``tiny`` preset (200 k train rows, 50 k test rows), once per session: shared, never modified by tests."""
    return generate_dataset(tmp_path_factory.mktemp("tiny") / "data")
