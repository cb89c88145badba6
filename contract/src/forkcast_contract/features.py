"""Feature layout shared by the trainer, the feature store and the inference service (SPEC §3).

The model input is the user's 30 features followed by the restaurant's 10, as float32. The schema hash names
this layout: a model records the hash it was trained on and serving refuses a feature version with another.
"""

from __future__ import annotations

import hashlib
import json
from typing import Final

USER_FEATURE_COUNT: Final = 30
RESTAURANT_FEATURE_COUNT: Final = 10
# Only the first SIGNAL_DIMS features of each side carry signal (SPEC §2: the click logit is their dot product).
SIGNAL_DIMS: Final = 10

USER_FEATURES: Final[tuple[str, ...]] = tuple(f"f{i:02d}" for i in range(USER_FEATURE_COUNT))
RESTAURANT_FEATURES: Final[tuple[str, ...]] = tuple(f"f{i:02d}" for i in range(RESTAURANT_FEATURE_COUNT))
MODEL_INPUTS: Final[tuple[str, ...]] = tuple(f"user.{n}" for n in USER_FEATURES) + tuple(
    f"restaurant.{n}" for n in RESTAURANT_FEATURES
)
MODEL_INPUT_DIM: Final = len(MODEL_INPUTS)
FEATURE_DTYPE: Final = "float32"


def feature_schema_hash() -> str:
    """A short, stable hash of the model-input layout (names, order, dtype)."""
    payload = json.dumps({"inputs": MODEL_INPUTS, "dtype": FEATURE_DTYPE}, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
