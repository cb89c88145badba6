"""Dataset contract helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

from forkcast_contract.dataset import click_file_name, read_manifest


def test_click_file_names() -> None:
    assert click_file_name("train", 7) == "train/train_07.parquet"
    assert click_file_name("test", 0) == "test/test_00.parquet"


def test_a_directory_without_manifest_is_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a complete forkcast dataset"):
        read_manifest(tmp_path)
