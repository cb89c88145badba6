"""The Redis ACL file and server directives of a rendered Redis StatefulSet, built the way its pod builds them.

The rules (users, commands, key patterns) are in the render, in a ConfigMap generated from
manifests/base/redis/<instance>.acl, so they are reviewed and tested like any manifest; the passwords are not. Each
user's line carries the placeholder ``#{<user>}`` where Redis expects ``#<sha256 hex of the password>`` (the ACL
file accepts a password's SHA-256 in place of the password: https://redis.io/docs/latest/operate/oss_and_stack/
management/security/acl/, "#<hash>"). In the cluster an init container of the StatefulSet fills the placeholders
from the Secret ``forkcast-redis-acl`` (one key per user, its password's sha256 hex); here ``acl_file`` does the same
from a dict of passwords, for the tests (tests/delivery/test_redis.py starts a real redis-server with it) and for the
local platform, which generates the passwords under .local/.

The ``default`` user is on with every permission, its ``#{default}`` filled with a digest drawn at random at every
start and kept nowhere, so no password is known to hash to it and no connection can authenticate as default. It is
not "off" because Redis replays the append-only file as the default user and, before redis/redis#14545 (valkey
#3983 the same), re-checks that user's ACL at each replayed EXEC: with default off every MULTI/EXEC (and every Lua
script's effects, written as MULTI/EXEC) is dropped on a restart (redis/redis#14541). Nobody may choose that digest:
a Secret or a password for ``default`` is refused.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

from forkcast_delivery.objects import of_kind
from forkcast_delivery.render import Doc

# The keys of the generated ConfigMaps (manifests/base/redis-config.yaml).
ACL_KEY = "users.acl"
CONF_KEY = "redis.conf"
# The user Redis replays the append-only file as: its hash is random at every start, never provided.
DEFAULT_USER = "default"
_DIGEST = re.compile(r"[0-9a-f]{64}")
_PLACEHOLDER = re.compile(r"#\{([a-z][a-z0-9-]*)\}")
_USER_LINE = re.compile(r"^user (\S+) ")
# Directives that say where an instance lives (file paths, port): a local run or a test sets its own.
LOCATION_DIRECTIVES = frozenset({"dir", "aclfile", "port", "bind", "unixsocket"})


class AclError(ValueError):
    """The template or the passwords do not make a complete ACL file (which user is missing, or why)."""


def password_hash(password: str) -> str:
    """What Secret ``forkcast-redis-acl`` holds for a user: the sha256 hex of its password."""
    return hashlib.sha256(password.encode()).hexdigest()


def placeholder(user: str) -> str:
    return f"#{{{user}}}"


def users(template: str) -> list[str]:
    """The users the template defines, in file order."""
    return [m.group(1) for line in template.splitlines() if (m := _USER_LINE.match(line))]


def random_digest() -> str:
    """A digest for the default user: 32 bytes from the OS's CSPRNG as 64 hex digits, like the init container's
    ``od -N32 /dev/urandom``; it is nobody's sha256, so nobody knows a password Redis would take for it."""
    return secrets.token_hex(32)


def fill(template: str, hashes: Mapping[str, str], *, default_digest: str | None = None) -> str:
    """The template with every ``#{user}`` replaced by ``#<hash>``; refuses a malformed hash or a missing user,
    as the init container does (a user left with a placeholder would make Redis refuse the whole file).

    ``#{default}`` takes ``default_digest``, or a fresh ``random_digest()`` when none is given (a test passes the
    init container's, to compare the two builds); a hash for ``default`` in ``hashes`` is refused, as the init
    container refuses a Secret key ``default``: whoever chose it could log in with every permission."""
    if DEFAULT_USER in hashes:
        raise AclError(
            f"{DEFAULT_USER}: its hash is random at every start and may not be provided "
            "(whoever knew its password would hold every permission)"
        )
    filled = {**hashes, DEFAULT_USER: random_digest() if default_digest is None else default_digest}
    for user, digest in filled.items():
        if not _DIGEST.fullmatch(digest):
            raise AclError(f"{user}: not a lowercase sha256 hex digest")
    missing = sorted({m.group(1) for m in _PLACEHOLDER.finditer(template)} - set(filled))
    if missing:
        raise AclError(f"no password hash for user(s) {', '.join(missing)}")
    return _PLACEHOLDER.sub(lambda m: f"#{filled[m.group(1)]}", template)


def acl_file(configmap: Doc, passwords: Mapping[str, str], *, default_digest: str | None = None) -> str:
    """The ACL file a pod mounting ``configmap`` runs with, for these users' passwords (``default`` has none:
    its digest is random unless ``default_digest`` is given, see ``fill``)."""
    return fill(
        str(configmap["data"][ACL_KEY]),
        {u: password_hash(p) for u, p in passwords.items()},
        default_digest=default_digest,
    )


def directives(configmap: Doc) -> dict[str, str]:
    """The redis.conf directives of the ConfigMap (comments and blank lines dropped; the last one wins)."""
    out: dict[str, str] = {}
    for line in str(configmap["data"][CONF_KEY]).splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition(" ")
            out[name.lower()] = value.strip()
    return out


def flags(configmap: Doc, *, skip: Iterable[str] = LOCATION_DIRECTIVES) -> list[str]:
    """The directives as redis-server command-line flags (``--maxmemory 900mb`` ...), without the ones in
    ``skip`` (by default those naming paths and ports, which a local run chooses itself)."""
    skipped = set(skip)
    out: list[str] = []
    for name, value in directives(configmap).items():
        if name not in skipped:
            out += [f"--{name}", value]
    return out


def config_maps(docs: Iterable[Doc], statefulset: str) -> dict[str, Doc]:
    """The ConfigMaps a StatefulSet's pod mounts, by volume name (``config`` and ``acl-template`` for Redis)."""
    sets = [d for d in of_kind(docs, "StatefulSet") if d["metadata"]["name"] == statefulset]
    if len(sets) != 1:
        raise AclError(f"expected one StatefulSet {statefulset}, found {len(sets)}")
    rendered = {d["metadata"]["name"]: d for d in of_kind(docs, "ConfigMap")}
    out = {}
    volumes: list[dict[str, Any]] = sets[0]["spec"]["template"]["spec"].get("volumes") or []
    for volume in volumes:
        if "configMap" in volume:
            out[volume["name"]] = rendered[volume["configMap"]["name"]]
    return out
