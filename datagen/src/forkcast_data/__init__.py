"""forkcast dataset generator: a faithful, vectorised re-creation of the original assignment's data (SPEC §2)."""

__version__ = "1.0.0"
