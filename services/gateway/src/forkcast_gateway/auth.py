"""API keys: stored hashed in a file (or a Kubernetes Secret mount), checked in constant time, reloaded on change.

File format, one key a line: ``<key-id>:<sha256-hex of the key>[:<scope>,…]`` (``#`` comments and blank lines
are skipped); the only scope so far is ``admin``. The file is re-read when its (inode, size, mtime) changes,
checked at most every ``reload_s`` — a Secret update swaps the mount's symlink, which changes the inode — so keys
rotate without a restart. A file that fails to parse keeps the previous keys (and logs why) rather than locking
every client out; ``POST /admin/keys/reload`` (:meth:`KeyStore.reload_now`) says so to the operator who asked,
with the reason, instead of answering 200 over a file it did not load (issue 18.6).

Why compare against every entry: a dict lookup by hash would return early and time how much of the hash matched;
``hmac.compare_digest`` over all entries (a handful) costs ≈ 0.2 µs each and leaks nothing but the count.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

from forkcast_contract.streams import NO_KEY_ID

log = logging.getLogger("forkcast_gateway.auth")
_LINE = re.compile(r"([A-Za-z0-9_.\-]{1,64}):([0-9a-fA-F]{64})(?::([a-z,]*))?")
KNOWN_SCOPES = frozenset({"admin"})


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    digest: bytes
    scopes: frozenset[str]


class KeyFileError(ValueError):
    pass


def parse_key_file(text: str) -> list[ApiKey]:
    keys: list[ApiKey] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.fullmatch(line)
        if m is None:
            raise KeyFileError(f"line {n} is not <key-id>:<sha256-hex>[:scopes]")
        if m.group(1) == NO_KEY_ID:
            raise KeyFileError(f"line {n}: key id {NO_KEY_ID!r} is reserved for calls without a key")
        scopes = frozenset(s for s in (m.group(3) or "").split(",") if s)
        if not scopes <= KNOWN_SCOPES:
            raise KeyFileError(f"line {n}: unknown scope {sorted(scopes - KNOWN_SCOPES)}")
        keys.append(ApiKey(m.group(1), bytes.fromhex(m.group(2)), scopes))
    if len({k.key_id for k in keys}) != len(keys):
        raise KeyFileError("a key id appears twice")
    return keys


def hash_key(key: str) -> str:
    """The sha256 hex that the key file stores for ``key``."""
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    def __init__(self, path: Path, reload_s: float) -> None:
        self.path, self.reload_s = path, reload_s
        self.keys: list[ApiKey] = []
        self._signature: tuple[int, int, int] | None = None
        self._checked_at = float("-inf")
        self.reload(force=True)

    def reload(self, force: bool = False) -> bool:
        """Re-read the file if it changed (or ``force``); True when the key set was replaced."""
        self._checked_at = time.monotonic()
        try:
            st = self.path.stat()
            signature = (st.st_ino, st.st_size, st.st_mtime_ns)
            if signature == self._signature and not force:
                return False
            keys = parse_key_file(self.path.read_text())
        except (OSError, KeyFileError, UnicodeDecodeError) as exc:
            if self._signature is None and force:
                raise
            log.error("API key file %s not reloaded, keeping %d keys: %s", self.path, len(self.keys), exc)
            return False
        self.keys, self._signature = keys, signature
        log.info("loaded %d API keys from %s", len(keys), self.path)
        return True

    def reload_now(self) -> int:
        """Re-read the file now; the number of keys loaded. A file that cannot be read or parsed raises
        (OSError, KeyFileError, UnicodeDecodeError) and the previous keys stay."""
        self._checked_at = time.monotonic()
        st = self.path.stat()
        keys = parse_key_file(self.path.read_text())
        self.keys, self._signature = keys, (st.st_ino, st.st_size, st.st_mtime_ns)
        log.info("loaded %d API keys from %s (admin reload)", len(keys), self.path)
        return len(keys)

    def lookup(self, presented: str) -> ApiKey | None:
        now = time.monotonic()
        if now - self._checked_at >= self.reload_s:
            self.reload()
        digest = hashlib.sha256(presented.encode()).digest()
        found: ApiKey | None = None
        for key in self.keys:  # no early exit: every entry is compared
            if hmac.compare_digest(digest, key.digest):
                found = key
        return found
