"""Model artifact format of SPEC §3-4: file names and the RankNet layer sizes, defined once.

The trainer writes these files and the registry and the inference service read them; naming them here keeps the
three in step when a file is added or renamed.
"""

from __future__ import annotations

from typing import Final

from forkcast_contract.features import MODEL_INPUT_DIM

MODEL_FILE: Final = "model.pt"  # TorchScript of the RankNet; input = standardised features (see SCALER_FILE)
SCALER_FILE: Final = (
    "scaler.npz"  # arrays `mean` and `std`, MODEL_INPUT_DIM float32 each: x_std = (x - mean) / std
)
METRICS_FILE: Final = "metrics.json"
TRAIN_LOG_FILE: Final = "train_log.jsonl"

# RankNet (SPEC §3, must not change): Linear(40, 256) -> Linear(256, 128) -> ReLU -> Linear(128, 1).
RANKNET_INPUT_DIM: Final = MODEL_INPUT_DIM
RANKNET_HIDDEN1: Final = 256
RANKNET_HIDDEN2: Final = 128

# Keys metrics.json must carry (SPEC §8); the gate and the registry read them.
REQUIRED_METRICS: Final[tuple[str, ...]] = ("roc_auc", "accuracy", "logloss")
