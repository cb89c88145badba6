"""Dataset size presets (SPEC §8).

``full`` is the original assignment. The smaller presets run the same process with other sizes, so their
tables differ from the full-size ones (the legacy stream is consumed in another pattern) and so do their
statistics, e.g. the click rate follows from the centres that were drawn.
"""

from __future__ import annotations

from typing import Final

from forkcast_contract.dataset import DatasetSizes

PRESETS: Final[dict[str, DatasetSizes]] = {
    "tiny": DatasetSizes(
        users=10_000,
        restaurants=2_000,
        train_files=4,
        test_files=1,
        rows_per_file=50_000,
        requests=200,
        candidates=1_000,
    ),
    "small": DatasetSizes(
        users=100_000,
        restaurants=20_000,
        train_files=8,
        test_files=1,
        rows_per_file=625_000,
        requests=2_000,
        candidates=1_000,
    ),
    "full": DatasetSizes(
        users=1_000_000,
        restaurants=100_000,
        train_files=80,
        test_files=8,
        rows_per_file=625_000,
        requests=10_000,
        candidates=1_000,
    ),
}


def preset_sizes(name: str) -> DatasetSizes:
    """The sizes of a named preset, with a clear error for an unknown name."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}") from None
