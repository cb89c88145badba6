"""Errors of the dataset snapshots, in a module without heavy imports: consumers catch them without loading delta-rs."""

from __future__ import annotations


class LakeDataError(RuntimeError):
    """A dataset in the lake is missing, incomplete, corrupted or of the wrong schema; the message names what."""


class SchemaMismatchError(LakeDataError):
    """A file's columns differ from the contract's: refused before anything is committed."""
