"""The local values of the Secrets a cluster provides out of band (manifests/provided-by-cluster.yaml).

In a cluster these Secrets come from sealed-secrets or External Secrets; locally each key is a file
``.local/secrets/<secret>/<key>`` (mode 0600, the folder 0700, never committed), generated on first use and stable
afterwards, so a restart keeps its passwords and the data written with them. Most keys are random; a few are
derived from others (``DERIVED``): the Redis URL carries the Redis password and names the ``redis`` Service as the
cluster's URL would (the plan maps the name to loopback), the ACL Secret holds each Redis user's password hash as
forkcast_delivery.redis_acl makes it, the gateway's key file holds the sha256 of the local demo key. A key that
looks like an address (``url``, ``endpoint``) needs a rule in ``DERIVED``: a random value there would only fail
later, at a confusing distance.
"""

from __future__ import annotations

import os
import secrets
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forkcast_delivery.redis_acl import password_hash

from forkcast_gateway.auth import hash_key

# The key id of the local demo key in the gateway's key file, and where its clear text lives.
DEMO_KEY_ID = "local-demo"
DEMO_KEY_FILE = "api-key"
_ADDRESS_WORDS = ("url", "endpoint", "host", "uri")


def redis_user_password(store: LocalSecrets, user: str) -> str:
    """The local password of Redis ACL user ``user`` (``.local/secrets/redis-users/<user>``)."""
    return store.value("redis-users", user)


def _redis_url(instance: str) -> Callable[[LocalSecrets, str, str], str]:
    """``forkcast-redis-<user>``'s URL of one Redis instance (features: Service ``redis``, events: ``redis-events``)
    with the user and its password, as provided-by-cluster.yaml describes it."""

    def make(store: LocalSecrets, secret: str, key: str) -> str:
        user = secret.removeprefix("forkcast-redis-")
        password = urllib.parse.quote(redis_user_password(store, user), safe="")
        return f"redis://{user}:{password}@{instance}:6379/0"

    return make


def _acl_hash(store: LocalSecrets, secret: str, key: str) -> str:
    # Secret forkcast-redis-acl: one key per user, the sha256 hex of its password (forkcast_delivery.redis_acl).
    return password_hash(redis_user_password(store, key))


def _exporter_password(store: LocalSecrets, secret: str, key: str) -> str:
    return redis_user_password(store, "exporter")


def _same_as_models_s3(store: LocalSecrets, secret: str, key: str) -> str:
    # Secret forkcast-s3-lake: in a cluster its own identity (write on the lake bucket); weed mini has one identity.
    return store.value("forkcast-s3", key)


def _api_keys(store: LocalSecrets, secret: str, key: str) -> str:
    return f"{DEMO_KEY_ID}:{hash_key(store.demo_key())}\n"


# (secret or "forkcast-redis-*", key or "*") -> how its local value is made from the others.
DERIVED: dict[tuple[str, str], Callable[[LocalSecrets, str, str], str]] = {
    ("forkcast-redis-*", "features-url"): _redis_url("redis"),
    ("forkcast-redis-*", "events-url"): _redis_url("redis-events"),
    ("forkcast-redis-acl", "*"): _acl_hash,
    ("forkcast-redis-exporter", "password"): _exporter_password,
    ("forkcast-api-keys", "keys"): _api_keys,
    ("forkcast-s3-lake", "*"): _same_as_models_s3,
}


def _rule(secret: str, key: str) -> Callable[[LocalSecrets, str, str], str] | None:
    for (s, k), make in DERIVED.items():
        if (s == secret or (s.endswith("*") and secret.startswith(s[:-1]))) and k in (key, "*"):
            return make
    return None


class SecretError(RuntimeError):
    """A Secret key the local platform cannot give a value to (the message names it)."""


@dataclass
class LocalSecrets:
    """Values of the cluster-provided Secrets under ``root`` (``.local/secrets``); ``provided`` is the ``secrets``
    map of provided-by-cluster.yaml (name -> {keys: [...]})."""

    root: Path
    provided: Mapping[str, Any] = field(default_factory=dict)

    def keys(self, secret: str) -> list[str]:
        """The keys a Secret has in the cluster (an envFrom secretRef brings each as a variable)."""
        entry = self.provided.get(secret)
        if entry is None:
            raise SecretError(
                f"Secret {secret} is neither rendered nor in manifests/provided-by-cluster.yaml"
            )
        return [str(k) for k in entry.get("keys") or []]

    def path(self, secret: str, key: str) -> Path:
        return self.root / secret / key

    def value(self, secret: str, key: str) -> str:
        """The key's value, made (and kept, mode 0600) on first use."""
        path = self.path(secret, key)
        if path.is_file():
            return path.read_text()
        if secret in self.provided and key not in self.keys(secret):
            raise SecretError(f"Secret {secret} has no key {key} (manifests/provided-by-cluster.yaml)")
        make = _rule(secret, key)
        if make is not None:
            text = make(self, secret, key)
        elif any(word in key.lower() for word in _ADDRESS_WORDS):
            raise SecretError(
                f"Secret {secret} key {key} looks like an address: add a rule to forkcast_local.local_secrets.DERIVED"
            )
        else:
            text = secrets.token_urlsafe(24)
        self._write(path, text)
        return text

    def demo_key(self) -> str:
        """The clear text of the local demo API key (``.local/secrets/api-key``): what clients send as X-API-Key."""
        path = self.root / DEMO_KEY_FILE
        if not path.is_file():
            self._write(path, "fk-" + secrets.token_urlsafe(24))
        return path.read_text().strip()

    def admit_keys(self, keys: Mapping[str, str]) -> Path:
        """The gateway's key file (Secret forkcast-api-keys, key ``keys``) with the demo key and ``keys`` (key id ->
        clear text, e.g. a drill's clients), each as ``id:sha256`` (forkcast_gateway.auth); returns its path. Written
        before ``up`` renders the gateway's mounted copy of it."""
        lines = _api_keys(self, "forkcast-api-keys", "keys")
        lines += "".join(f"{key_id}:{hash_key(key)}\n" for key_id, key in keys.items())
        path = self.path("forkcast-api-keys", "keys")
        path.unlink(missing_ok=True)
        self._write(path, lines)
        return path

    def _write(self, path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.root.chmod(0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
