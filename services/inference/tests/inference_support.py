"""Transitional: localplatform/tests/test_faults.py (through localplatform/tests/conftest.py's sys.path insert)
still imports the inference test helpers by path as ``inference_support``. They live in
``forkcast_inference.testing`` now; this file goes as soon as localplatform imports that module instead."""

from forkcast_inference.testing import generate_tiny, train_tiny_model

__all__ = ["generate_tiny", "train_tiny_model"]
