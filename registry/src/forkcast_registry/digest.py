"""sha256 of files and bytes, streamed so a large model never has to fit in memory twice."""

from __future__ import annotations

import hashlib
from pathlib import Path

from forkcast_contract.registry_format import FileDigest

_CHUNK = 1 << 20


def file_digest(path: Path) -> FileDigest:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return FileDigest(sha256=h.hexdigest(), size=size)


def bytes_digest(data: bytes) -> FileDigest:
    return FileDigest(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
