"""``forkcast-gateway keygen``: a new API key and the line that admits it in FORKCAST_API_KEYS_FILE.

The key is 256 bits from ``secrets`` (``token_urlsafe(32)``); the file stores only its sha256 (auth.py), so the key
is printed once and kept nowhere: give it to the client, append the line to the key file (or its Secret), and the
gateway picks it up within FORKCAST_KEYS_RELOAD_S (or at once with ``POST /admin/keys/reload``).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from forkcast_contract.api import KEY_ID_PATTERN
from forkcast_contract.streams import NO_KEY_ID
from forkcast_gateway.auth import KNOWN_SCOPES, hash_key, parse_key_file

_KEY_ID = re.compile(KEY_ID_PATTERN)


@dataclass(frozen=True)
class NewKey:
    key: str
    line: str


def new_key(key_id: str, scopes: frozenset[str] = frozenset()) -> NewKey:
    """A fresh key for ``key_id``; ValueError for an id or a scope the key file would refuse."""
    if _KEY_ID.fullmatch(key_id) is None or key_id == NO_KEY_ID:
        raise ValueError(f"key id {key_id!r}: 1-64 of A-Z a-z 0-9 _ . - (and not {NO_KEY_ID!r})")
    if not scopes <= KNOWN_SCOPES:
        raise ValueError(f"unknown scope {sorted(scopes - KNOWN_SCOPES)}; known: {sorted(KNOWN_SCOPES)}")
    key = secrets.token_urlsafe(32)
    line = f"{key_id}:{hash_key(key)}" + (f":{','.join(sorted(scopes))}" if scopes else "")
    parse_key_file(line)  # the line must be one the gateway loads
    return NewKey(key, line)


def render(new: NewKey) -> str:
    """What keygen prints: the two values, each under a ``#`` comment saying what it is."""
    return (
        "# API key (give it to the client; it is shown once and stored nowhere):\n"
        f"{new.key}\n"
        "# line for FORKCAST_API_KEYS_FILE:\n"
        f"{new.line}\n"
    )
