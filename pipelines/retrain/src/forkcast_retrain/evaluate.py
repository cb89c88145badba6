"""evaluate: score the test files with every epoch's checkpoint; write metrics.json, model.pt and scaler.npz.

The test files are read once and each file is scored by all epoch checkpoints, so per-epoch test metrics cost one
pass over the data, not one per epoch. The final model is exported as TorchScript and re-loaded to check that
it reproduces the trainer's scores before metrics.json (which marks a finished run) is written.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from forkcast_contract.features import feature_schema_hash
from forkcast_contract.model_format import METRICS_FILE, MODEL_FILE, SCALER_FILE
from forkcast_retrain import metrics as m
from forkcast_retrain.checkpoint import list_checkpoints, load_checkpoint
from forkcast_retrain.errors import DataError
from forkcast_retrain.fastpath import fast_forward
from forkcast_retrain.model import RankNet
from forkcast_retrain.prep import load_prepared
from forkcast_retrain.stream import FeatureGatherer
from forkcast_retrain.train import TRAIN_SUMMARY_FILE

EXPORT_TOLERANCE = 1e-4  # max |logit| difference between the TorchScript export and the fast forward


def code_revision() -> str:
    """FORKCAST_CODE_REVISION (set by CI images without .git), else ``git rev-parse HEAD``, else "unknown"."""
    env = os.environ.get("FORKCAST_CODE_REVISION")
    if env:
        return env
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _scores(model: RankNet, x: torch.Tensor) -> np.ndarray:
    return fast_forward(model, x).numpy()


def score_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {
        "roc_auc": m.roc_auc(logits, labels),
        "accuracy": m.accuracy(logits, labels),
        "logloss": m.logloss(logits, labels),
        "calibration_error": m.calibration_error(logits, labels),
    }


def run_evaluate(run_dir: Path, log: Any = print) -> dict[str, Any]:
    """Evaluate the trained run in ``run_dir``; returns the metrics written to metrics.json."""
    started = time.perf_counter()
    summary_path = run_dir / TRAIN_SUMMARY_FILE
    if not summary_path.is_file():
        raise DataError(f"{run_dir} has no finished train step ({TRAIN_SUMMARY_FILE} missing)")
    summary = json.loads(summary_path.read_text())
    prepared = load_prepared(run_dir)
    scaler = np.load(run_dir / SCALER_FILE)
    gatherer = FeatureGatherer(prepared, scaler["mean"], scaler["std"])
    states = [load_checkpoint(p) for p in list_checkpoints(run_dir)]
    if len(states) != len(summary["epochs"]):
        raise DataError(f"{run_dir}: {len(states)} checkpoints for {len(summary['epochs'])} trained epochs")
    models = []
    for state in states:
        model = RankNet()
        model.load_state_dict(state["model"])
        models.append(model.eval())

    logits: list[list[np.ndarray]] = [[] for _ in models]
    labels: list[np.ndarray] = []
    for path in prepared.click_files("test"):
        x, y = gatherer.load(path)
        labels.append(y.numpy())
        for i, model in enumerate(models):
            logits[i].append(_scores(model, x))
    y_all = np.concatenate(labels)
    if len(y_all) != prepared.info["rows"]["test"]:
        raise DataError(
            f"read {len(y_all):,} test rows but dataset.json lists {prepared.info['rows']['test']:,}"
        )
    per_epoch = [
        {**train_entry, **{f"test_{k}": v for k, v in score_metrics(np.concatenate(parts), y_all).items()}}
        for train_entry, parts in zip(summary["epochs"], logits, strict=True)
    ]
    final_logits = np.concatenate(logits[-1])
    final = score_metrics(final_logits, y_all)

    final_model = models[-1]
    scripted = torch.jit.script(final_model)
    scripted.save(str(run_dir / MODEL_FILE))  # type: ignore[no-untyped-call]
    probe = x[:1024]
    reloaded = torch.jit.load(str(run_dir / MODEL_FILE))  # type: ignore[no-untyped-call]
    with torch.no_grad():
        gap = float((reloaded(probe) - fast_forward(final_model, probe)).abs().max())
    if gap > EXPORT_TOLERANCE:
        raise RuntimeError(f"exported model.pt differs from the trained model by {gap:.3g} in logit")

    result: dict[str, Any] = {
        **final,
        "rows": {"train": prepared.info["rows"]["train"], "test": len(y_all)},
        "data_fingerprint": prepared.info["data_fingerprint"],
        "dataset_preset": prepared.info["preset"],
        "feature_schema_hash": feature_schema_hash(),
        "code_revision": code_revision(),
        "training_time_s": summary["training_time_s"],
        "hyperparameters": {
            **summary["recipe"],  # its `epochs` is the number trained (train.py), which per-epoch rows match
            "epochs_requested": summary.get("epochs_requested", summary["recipe"]["epochs"]),
            "optimizer": "Adam",
            "loss": "BCEWithLogits",
            "fast_path": summary["fast_path"],
            "threads_per_process": summary["threads_per_process"],
            "world_size": summary["world_size"],
        },
        "input_scaler": summary["scaler"],
        "epochs": per_epoch,
        "evaluate_time_s": round(time.perf_counter() - started, 3),
    }
    (run_dir / METRICS_FILE).write_text(json.dumps(result, indent=2))
    log(
        f"test roc_auc={final['roc_auc']:.4f} accuracy={final['accuracy']:.4f} logloss={final['logloss']:.4f} "
        f"calibration_error={final['calibration_error']:.4f} rows={len(y_all):,}"
    )
    return result
