"""Per-epoch checkpoints: what an interrupted train step resumes from, and what evaluate scores per epoch.

Each file is written to a temporary name and renamed, so a crash mid-write never leaves a checkpoint that loads
but is truncated; the newest complete one is the resume point.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

CHECKPOINT_DIR = "checkpoints"


def checkpoint_path(run_dir: Path, epoch: int) -> Path:
    return run_dir / CHECKPOINT_DIR / f"epoch_{epoch:03d}.pt"


def save_checkpoint(run_dir: Path, epoch: int, state: dict[str, Any]) -> Path:
    """Write the state after ``epoch`` (1-based) atomically."""
    path = checkpoint_path(run_dir, epoch)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    return path


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of ``run_dir``, oldest epoch first."""
    folder = run_dir / CHECKPOINT_DIR
    return sorted(folder.glob("epoch_*.pt")) if folder.is_dir() else []


def load_checkpoint(path: Path) -> dict[str, Any]:
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    return state


def clear_checkpoints(run_dir: Path) -> None:
    """Remove this run's checkpoints (for ``--restart``); touches nothing else."""
    for path in list_checkpoints(run_dir):
        path.unlink()
    for tmp in (run_dir / CHECKPOINT_DIR).glob("epoch_*.tmp") if (run_dir / CHECKPOINT_DIR).is_dir() else []:
        tmp.unlink()
