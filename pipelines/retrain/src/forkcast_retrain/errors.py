"""One exception type for bad input, so the CLI can print a clear message instead of a traceback."""

from __future__ import annotations


class DataError(ValueError):
    """The input data (or a run directory) is missing, malformed, or inconsistent; the message says how."""


class TrainingAbortedError(RuntimeError):
    """Training stopped because the loss became NaN or infinite."""
