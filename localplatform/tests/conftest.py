"""The inference tests' helpers (tiny data, a tiny trained model: services/inference/tests/inference_support.py)
are importable here as ``inference_support``, the way the gateway tests import them: by path, not copied."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2] / "services" / "inference" / "tests"))
