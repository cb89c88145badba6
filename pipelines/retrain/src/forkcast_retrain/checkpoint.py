"""Per-epoch checkpoints: what an interrupted train step resumes from, and what evaluate scores per epoch.

Each file is written to a temporary name and renamed, so a crash mid-write never leaves a checkpoint that loads
but is truncated; the newest complete one is the resume point. A checkpoint is read with torch's restricted
unpickler (``weights_only=True``: tensors, dicts, lists, tuples and plain values only), so a file planted in a
run directory (an artifact handed between CI jobs, a bucket of runs) cannot run code when train or evaluate opens
it (PyTorch docs, torch.load: "weights_only=False ... can result in arbitrary code execution").
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from forkcast_retrain.errors import DataError

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
    """The state saved after one epoch; anything but weights and plain values is refused, never executed."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise DataError(
            f"{path} holds objects a checkpoint never contains; refused without running them "
            f"(torch.load weights_only=True): {str(exc).splitlines()[0][:200]}"
        ) from exc
    if not isinstance(state, dict):
        raise DataError(f"{path} is not a checkpoint (a {type(state).__name__}, not a dict)")
    return state


def clear_checkpoints(run_dir: Path) -> None:
    """Remove this run's checkpoints (for ``--restart``); touches nothing else."""
    for path in list_checkpoints(run_dir):
        path.unlink()
    for tmp in (run_dir / CHECKPOINT_DIR).glob("epoch_*.tmp") if (run_dir / CHECKPOINT_DIR).is_dir() else []:
        tmp.unlink()
