"""Request ids the gateway mints, bound to the caller's API key, so that /feedback can check who owns an id.

Issue 18.1: request ids were the caller's own X-Request-ID or a guessable counter, and /feedback took any id from
any key, so a client could label another client's (or the canary's) traffic. Now every id is
``<nonce>.<tag>``: 128 random bits from ``secrets`` and HMAC-SHA256(secret, nonce ‖ key id) truncated to 128 bits,
each base64url without padding. The feedback route recomputes the tag for the caller's key: no per-request Redis
write on the hot path, and every replica agrees because they share the secret (``FORKCAST_REQUEST_ID_KEY_FILE``).

Why 128 bits of tag: RFC 2104 §5 advises keeping at least half the hash output (and at least 80 bits) when a MAC is
truncated; half of SHA-256 is 128 bits, and the id stays 45 characters, within the 64 the feedback schema takes.
Measured here (timeit, 200,000 runs on the 2-core VM): minting one id costs ≈ 3.0 µs, of which the HMAC ≈ 1.5 µs
and the nonce and base64 the rest — against a ≈ 300 µs gateway request.

The key file holds one secret a line (``#`` comments and blank lines skipped; each at least 32 characters, e.g.
``openssl rand -base64 32``). The first line signs; every line verifies, so a secret rotates without refusing
the feedback on ids minted just before: add the new secret as line 1, keep the old one below it for the
attribution window, then remove it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
import secrets
import weakref
from collections.abc import Iterable
from enum import Enum
from pathlib import Path
from typing import Final

from forkcast_contract.api import CORRELATION_ID_PATTERN

log = logging.getLogger("forkcast_gateway.request_ids")

NONCE_BYTES: Final = 16
NONCE_BATCH: Final = 256  # ids minted per os.urandom read
TAG_BYTES: Final = 16
SECRET_MIN_CHARS: Final = 32
# The key id of a request that was refused before a key was known (401, 413 …): no API key can have an empty id
# (auth.py's key-id pattern needs one character at least), so no caller can send feedback on such an id.
NO_KEY: Final = ""
_CORRELATION_ID = re.compile(CORRELATION_ID_PATTERN.encode())


class Verdict(Enum):
    """The outcome of checking a request id against a key; the value is the metric label of a refusal."""

    OWN = "own"
    FOREIGN_KEY = "foreign_key"  # minted by this gateway for another API key
    FORGED = "forged"  # the shape of a minted id, but no key's tag matches
    MALFORMED = "malformed"  # not the shape of a minted id at all


class RequestIdKeyError(ValueError):
    """The request-id key file is missing, unreadable or holds no usable secret."""


def read_secrets(path: Path) -> list[bytes]:
    """The secrets of a request-id key file, signing secret first."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise RequestIdKeyError(f"request-id key file {path}: {exc}") from exc
    found = [line.strip() for line in text.splitlines()]
    found = [line for line in found if line and not line.startswith("#")]
    if not found:
        raise RequestIdKeyError(f"request-id key file {path} holds no secret")
    short = [n for n, line in enumerate(found, 1) if len(line) < SECRET_MIN_CHARS]
    if short:
        raise RequestIdKeyError(
            f"request-id key file {path}: secret {short[0]} is shorter than {SECRET_MIN_CHARS} characters"
        )
    return [line.encode() for line in found]


_URLSAFE = bytes.maketrans(b"+/", b"-_")
_B64_CHARS = (NONCE_BYTES * 4 + 2) // 3  # 22, unpadded; TAG_BYTES is the same size


def _b2a(raw: bytes) -> bytes:
    return binascii.b2a_base64(raw, newline=False)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str, size: int) -> bytes | None:
    if len(text) != (size * 4 + 2) // 3:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    # Non-canonical spellings (other trailing bits) decode to the same bytes: refuse them, one id has one spelling.
    return raw if len(raw) == size and _b64(raw) == text else None


class RequestIds:
    """Mints and verifies request ids with the secrets of one key file (or one random secret, local only)."""

    def __init__(self, secret_list: Iterable[bytes]) -> None:
        self.secrets = list(secret_list)
        if not self.secrets:
            raise RequestIdKeyError("no request-id secret")
        # One keyed HMAC state per secret, copied per id: hmac.digest(secret, …) set the key up again on every call
        # (OpenSSL 3.0.19 here: 4.2 µs per call against 2.1 µs for copy + update + digest, timeit, 2-core VM under
        # load, 2026-12-05).
        self._keyed = [hmac.new(secret, digestmod=hashlib.sha256) for secret in self.secrets]
        self._signing = self._keyed[0]
        # Nonces are cut from one os.urandom read of NONCE_BATCH ids instead of one read (a getrandom syscall) per
        # id: secrets.token_bytes(16) 0.61-1.57 µs against 0.45-0.51 µs for a batched nonce, the syscall's share
        # growing with the machine's load (timeit, 2-core VM under load, 2026-12-05; mint 6.0 → 3.4 µs back to back).
        # The same CSPRNG; every nonce is used once; a forked child starts with an empty batch.
        self._nonces, self._at = b"", 0
        _MINTERS.add(self)

    @classmethod
    def from_file(cls, path: Path | None) -> RequestIds:
        """From ``path``; None (allowed only in a local environment, see settings) → a random per-process secret,
        which works for one gateway process and nothing else."""
        if path is None:
            log.warning("FORKCAST_REQUEST_ID_KEY_FILE unset: request ids verify in this process only (local)")
            return cls([secrets.token_bytes(32)])
        return cls(read_secrets(path))

    @staticmethod
    def _tag(keyed: hmac.HMAC, nonce: bytes, key_id: str) -> bytes:
        # The nonce has a fixed length, so nonce ‖ key id splits one way only.
        mac = keyed.copy()
        mac.update(nonce + key_id.encode())
        return mac.digest()[:TAG_BYTES]

    def mint(self, key_id: str) -> str:
        # The two base64url parts encoded and translated in one go: 16 bytes are 22 characters and "==", so the
        # padding is cut by slicing (the same text as _b64; 6.6 → 5.6 µs per id against two _b64 calls, timeit,
        # 2-core VM under load, 2026-12-05; tests/test_request_ids.py verifies minted ids).
        at = self._at
        if at == len(self._nonces):
            self._nonces, at = os.urandom(NONCE_BYTES * NONCE_BATCH), 0
        self._at = at + NONCE_BYTES
        nonce = self._nonces[at : at + NONCE_BYTES]
        tag = self._tag(self._signing, nonce, key_id)
        return (_b2a(nonce)[:_B64_CHARS] + b"." + _b2a(tag)[:_B64_CHARS]).translate(_URLSAFE).decode()

    def verify(self, request_id: str, key_id: str, other_key_ids: Iterable[str] = ()) -> Verdict:
        """Whether ``request_id`` was minted for ``key_id``; if not, why (``other_key_ids``: the other keys the
        gateway knows, tried only on this refusal path to tell a foreign id from a forged one)."""
        nonce_text, dot, tag_text = request_id.partition(".")
        nonce, tag = _unb64(nonce_text, NONCE_BYTES), _unb64(tag_text, TAG_BYTES)
        if not dot or nonce is None or tag is None:
            return Verdict.MALFORMED
        for keyed in self._keyed:
            if hmac.compare_digest(tag, self._tag(keyed, nonce, key_id)):
                return Verdict.OWN
        for other in other_key_ids:
            if other != key_id and any(
                hmac.compare_digest(tag, self._tag(keyed, nonce, other)) for keyed in self._keyed
            ):
                return Verdict.FOREIGN_KEY
        return Verdict.FORGED


_MINTERS: weakref.WeakSet[RequestIds] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A forked child must not reuse its parent's unspent nonces."""
    for minter in _MINTERS:
        minter._nonces, minter._at = b"", 0


os.register_at_fork(after_in_child=_after_fork_in_child)


def correlation_id(raw: bytes | None) -> bytes | None:
    """A caller's X-Request-ID, kept only as X-Correlation-ID when it is 1-64 of ``[A-Za-z0-9._:-]`` (no spaces,
    no control characters: nothing a log line or a response header could be split on); otherwise dropped."""
    if raw is None or _CORRELATION_ID.fullmatch(raw) is None:
        return None
    return raw
