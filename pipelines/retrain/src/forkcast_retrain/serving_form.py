"""The serving form published with each version: weights as .npz and a probe set with the TorchScript scores.

The inference service reads these without importing torch (≈700 MB less image, faster start) and checks its own
folded computation against the probe scores at load (SPEC §4-5). Publish checks the same thing here, with a
plain numpy forward, so a version whose weights do not reproduce model.pt is never published.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from forkcast_contract.model_format import RANKNET_INPUT_DIM
from forkcast_contract.registry_format import PROBE_FILE, PROBE_TOLERANCE, SERVING_WEIGHTS_FILE, probe_gap
from forkcast_retrain.errors import DataError
from forkcast_retrain.prep import Prepared

PROBE_ROWS = 512
PROBE_SEED = 20240901  # fixed: the same (user, restaurant) rows for every version of a dataset
# TorchScript state-dict names of the three Linear layers of RankNet.net (model.py), in order.
_LAYERS = ("net.0", "net.1", "net.3")

F32 = npt.NDArray[np.float32]


def load_torchscript(path: Path) -> Any:
    """Load model.pt and check it is a TorchScript RankNet taking 40 inputs to one logit per row."""
    try:
        model = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
    except (RuntimeError, ValueError, OSError) as exc:
        raise DataError(f"{path} is not a TorchScript model: {str(exc).splitlines()[0]}") from exc
    try:
        with torch.no_grad():
            out = model(torch.zeros(3, RANKNET_INPUT_DIM))
    except RuntimeError as exc:
        raise DataError(f"{path} does not accept {RANKNET_INPUT_DIM} input features: {exc}") from exc
    if tuple(out.shape) != (3,):
        raise DataError(
            f"{path} returns shape {tuple(out.shape)} for 3 rows; a RankNet returns one logit per row"
        )
    return model


def load_scaler(path: Path) -> tuple[F32, F32]:
    """``mean`` and ``std`` of scaler.npz, each of the model's input size, std > 0."""
    try:
        with np.load(path) as z:
            mean, std = z["mean"].astype(np.float32), z["std"].astype(np.float32)
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"{path} is not a scaler with arrays mean and std: {exc}") from exc
    if mean.shape != (RANKNET_INPUT_DIM,) or std.shape != (RANKNET_INPUT_DIM,) or not (std > 0).all():
        raise DataError(f"{path}: mean/std must be {RANKNET_INPUT_DIM} values each with std > 0")
    return mean, std


def layer_weights(model: Any) -> dict[str, F32]:
    state = model.state_dict()
    try:
        return {
            f"{kind}{i}": state[f"{layer}.{name}"].detach().numpy().astype(np.float32)
            for i, layer in enumerate(_LAYERS, start=1)
            for kind, name in (("w", "weight"), ("b", "bias"))
        }
    except KeyError as exc:
        raise DataError(f"model.pt is not the SPEC §3 RankNet (no parameter {exc})") from exc


def numpy_forward(weights: dict[str, F32], x_std: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """The RankNet in float64 numpy: what a torch-free server computes (before any folding)."""
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    h = x_std @ w["w1"].T + w["b1"]
    h = np.maximum(h @ w["w2"].T + w["b2"], 0.0)
    return np.asarray(h @ w["w3"].T + w["b3"], dtype=np.float64)[:, 0]


def probe_inputs(prepared: Prepared) -> F32:
    """Raw (unstandardised) feature rows of fixed-seed (user, restaurant) pairs from the training tables."""
    rng = np.random.default_rng(PROBE_SEED)
    users = rng.integers(0, len(prepared.users), PROBE_ROWS)
    rests = rng.integers(0, len(prepared.restaurants), PROBE_ROWS)
    return np.ascontiguousarray(
        np.hstack([prepared.users[users], prepared.restaurants[rests]]), dtype=np.float32
    )


def torchscript_scores(model: Any, mean: F32, std: F32, raw: F32) -> F32:
    with torch.no_grad():
        return np.asarray(model(torch.from_numpy((raw - mean) / std)).numpy(), dtype=np.float32)


def write_serving_form(
    model_path: Path, scaler_path: Path, prepared: Prepared, out_dir: Path
) -> dict[str, Path]:
    """Write serving_weights.npz and probe.npz into ``out_dir`` after checking the numpy forward agrees.

    The probe ``scores`` are logits, not the probabilities a client is served: the inference service checks its own
    forward against them (``probe_gap``, where a sigmoid would flatten differences in the tails), and the drift job
    turns them into served scores itself (``forkcast_contract.drift.served_scores``) before comparing.
    """
    model = load_torchscript(model_path)
    mean, std = load_scaler(scaler_path)
    weights = layer_weights(model)
    raw = probe_inputs(prepared)
    scores = torchscript_scores(model, mean, std, raw)
    gap = probe_gap(numpy_forward(weights, (raw - mean) / std), scores)
    if not gap <= PROBE_TOLERANCE:
        raise DataError(
            f"numpy forward of the exported weights differs from model.pt by {gap:.3g} (max {PROBE_TOLERANCE})"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {SERVING_WEIGHTS_FILE: out_dir / SERVING_WEIGHTS_FILE, PROBE_FILE: out_dir / PROBE_FILE}
    np.savez(paths[SERVING_WEIGHTS_FILE], **weights)  # type: ignore[arg-type]
    np.savez(paths[PROBE_FILE], inputs=raw, scores=scores)
    return paths
