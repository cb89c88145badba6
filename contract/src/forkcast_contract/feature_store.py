"""Redis layout of the online feature store (SPEC §5), shared by the loader and the inference service.

Pure layout and packing (numpy only, no Redis client), so that every reader and writer agrees on key names and
bytes. One compact binary value per entity:

* user ``<prefix>:<version>:u:<id>``: 30 little-endian float32 (120 bytes);
* restaurant ``<prefix>:<version>:r:{<version>:r}<id>``: latitude and longitude as little-endian int32 in units
  of 1e-7 degree (≈ 1.1 cm, so displacement stays far within 0.5 m; float32 would lose up to 0.4 m of
  longitude near 100° E), followed by 10 little-endian float32 (48 bytes).

Hash tags, standalone Redis (and versions loaded before copies existed): every restaurant key of a version, and
that version's restaurant revision counter, share the tag ``{<version>:r}``, so they live in one slot: a request's
candidates are one MGET and a restaurant update plus its revision bump is one atomic step.

Redis Cluster (issue 19): user keys carry no tag and spread over all slots. The small restaurant table is written
once per master as a *copy* ``c<j>`` under the tag ``{<prefix>:c<j>}``, ``j`` chosen at load so that the tag's slot
belongs to that master (``VersionMeta.restaurant_copies`` lists them). The tag does not name the version, so the
copy's slot also holds a copy of the live pointer, ``<prefix>:live:{<prefix>:c<j>}``, and the copy's revision
counter: a request reads [pointer copy, revision, in-range restaurants] as ONE MGET from the copy on its user's
node, plus the user's GET in the same pipeline — one round trip to one node, and no key that every request reads.
Cutover writes the canonical pointer, then each pointer copy; a reader checks the pointer copy it read in the same
MGET as the data, and every key it reads names one version, so no request mixes versions. The measurements behind
the choice (against H3-cell tags and one tag per version) are in featurestore/BENCHMARKS.md.

Control keys: ``<prefix>:live`` holds the live version name (the pointer; one atomic SET switches it),
``<prefix>:meta:<version>`` a small hash per version (:class:`VersionMeta`), ``<prefix>:versions`` the set of
known versions, ``<prefix>:copies`` the set of every restaurant copy name ever loaded (the pointer copies cutover
keeps in step). A reader reads the pointer, then only keys of that version: no request mixes versions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Final

import numpy as np
import numpy.typing as npt

from forkcast_contract.features import RESTAURANT_FEATURE_COUNT, USER_FEATURE_COUNT

LAYOUT_VERSION: Final = 1
DEFAULT_PREFIX: Final = "fc"

FEATURE_WIRE_DTYPE: Final = np.dtype("<f4")
COORD_WIRE_DTYPE: Final = np.dtype("<i4")
# Coordinates are stored as integers in units of 1e-7 degree (|lng| ≤ 180° fits in int32).
COORD_SCALE: Final = 10_000_000

USER_VALUE_BYTES: Final = USER_FEATURE_COUNT * 4
RESTAURANT_VALUE_BYTES: Final = 2 * 4 + RESTAURANT_FEATURE_COUNT * 4

# Version states, in the order a version goes through them.
STATE_LOADING: Final = "loading"
STATE_LOADED: Final = "loaded"
STATE_VERIFIED: Final = "verified"


def version_name(source_fingerprint: str, schema_hash: str) -> str:
    """The feature-version name for a source dataset: deterministic, so a rerun resumes the same version.

    Eight hex digits keep every key short (key bytes are most of the per-entity overhead in Redis).
    """
    digest = hashlib.sha256(f"{LAYOUT_VERSION}:{schema_hash}:{source_fingerprint}".encode()).hexdigest()
    return digest[:8]


@dataclass(frozen=True)
class FeatureKeys:
    """Key names of one feature version; ``copy`` names one Cluster copy of its restaurants ("" = the single table)."""

    prefix: str
    version: str
    copy: str = ""

    @property
    def user_base(self) -> str:
        """User key without the id: ``user_base + str(id)`` is the key."""
        return f"{self.prefix}:{self.version}:u:"

    @property
    def restaurant_tag(self) -> str:
        """The hash tag of this version's restaurant keys (of this copy, on a Cluster)."""
        return copy_tag(self.prefix, self.copy) if self.copy else f"{{{self.version}:r}}"

    def with_copy(self, copy: str) -> FeatureKeys:
        """The keys of the same version in restaurant copy ``copy``."""
        return FeatureKeys(self.prefix, self.version, copy)

    @property
    def restaurant_base(self) -> str:
        """Restaurant key without the id."""
        return f"{self.prefix}:{self.version}:r:{self.restaurant_tag}"

    @property
    def restaurant_revision(self) -> str:
        """Counter bumped with every restaurant change in this version (same slot as the restaurants)."""
        return f"{self.prefix}:{self.version}:rrev:{self.restaurant_tag}"

    @property
    def pattern(self) -> str:
        """SCAN pattern matching every data key of this version (not its metadata)."""
        return f"{self.prefix}:{self.version}:*"

    def user(self, user_id: int) -> str:
        return f"{self.user_base}{user_id}"

    def restaurant(self, restaurant_id: int) -> str:
        return f"{self.restaurant_base}{restaurant_id}"


def pointer_key(prefix: str) -> str:
    """The key whose value names the live feature version."""
    return f"{prefix}:live"


def copy_tag(prefix: str, copy: str) -> str:
    """The hash tag of restaurant copy ``copy`` (version-independent, so the pointer copy shares its slot)."""
    return f"{{{prefix}:{copy}}}"


def copy_tag_body(prefix: str, copy: str) -> str:
    """What Redis hashes for ``copy_tag`` (the text inside the braces), to find the slot of a copy."""
    return f"{prefix}:{copy}"


def pointer_copy_key(prefix: str, copy: str) -> str:
    """The copy of the live pointer in the slot of restaurant copy ``copy``."""
    return f"{prefix}:live:{copy_tag(prefix, copy)}"


def copies_key(prefix: str) -> str:
    """The set of every restaurant copy name loaded under ``prefix`` (whose pointer copies cutover updates)."""
    return f"{prefix}:copies"


def parse_copies(text: str) -> list[str]:
    """``VersionMeta.restaurant_copies`` as a list; [""] (the single table) for a version without copies."""
    return [c for c in text.split(",") if c] or [""]


def restaurant_copy_keys(keys: FeatureKeys, restaurant_copies: str) -> list[FeatureKeys]:
    """The keys a live restaurant update writes: every copy of ``VersionMeta.restaurant_copies`` on a Cluster (each
    with its own revision, which the readers of that copy check), the single table for a version without copies.

    One definition for every writer of single restaurants (the feature-store CLI, the gateway's admin endpoint), so
    that neither can miss a copy the other updates.
    """
    return [keys.with_copy(copy) for copy in parse_copies(restaurant_copies)]


# SET XX of a restaurant value, then INCR of its revision, atomically: KEYS[1] the restaurant key, KEYS[2] its
# copy's revision, ARGV[1] the value; nil when the restaurant does not exist (nothing written). Both keys share a
# slot (the copy's tag, or ``{<version>:r}``), so the script runs on one node, standalone or Cluster. Lua text only:
# the contract does not depend on a Redis client. INCRBY, not INCR: the ACL users that run it (loader, gateway in
# manifests/base/redis/features.acl) are granted INCRBY, which redis-py's ``incr`` sends, and a script's commands are
# checked against the caller's user.
SET_AND_BUMP_SCRIPT: Final = """
if redis.call('SET', KEYS[1], ARGV[1], 'XX') then return redis.call('INCRBY', KEYS[2], 1) end
return false
"""


def meta_key(prefix: str, version: str) -> str:
    return f"{prefix}:meta:{version}"


def versions_key(prefix: str) -> str:
    return f"{prefix}:versions"


@dataclass(frozen=True)
class VersionMeta:
    """The metadata record of one feature version (a Redis hash of strings; empty string = not yet)."""

    version: str
    layout_version: int
    feature_schema_hash: str
    source_fingerprint: str
    users: int
    restaurants: int
    state: str
    created_at: str
    users_loaded: int = 0
    restaurants_loaded: int = 0
    loaded_at: str = ""
    verified_at: str = ""
    activated_at: str = ""
    deactivated_at: str = ""
    previous: str = ""
    updates: int = 0
    # Comma-separated restaurant copy names on a Cluster (see the module docstring); "" = one table, standalone.
    restaurant_copies: str = ""
    # The lake snapshot the version was loaded from, as JSON (forkcast_lake Snapshot.record(): uri, version,
    # fingerprint, tables); "" when it was loaded from a local directory.
    source_snapshot: str = ""

    def to_redis(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_redis(cls, raw: dict[bytes, bytes] | dict[str, str]) -> VersionMeta:
        text = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in raw.items()
        }
        values: dict[str, object] = {}
        for f in fields(cls):
            if f.name in text:
                values[f.name] = int(text[f.name]) if f.type in ("int", int) else text[f.name]
        return cls(**values)  # type: ignore[arg-type]


F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


def pack_users(features: npt.NDArray[np.floating]) -> bytes:
    """Pack an (n, 30) array into n consecutive user values (slice every USER_VALUE_BYTES)."""
    if features.ndim != 2 or features.shape[1] != USER_FEATURE_COUNT:
        raise ValueError(f"user features must have shape (n, {USER_FEATURE_COUNT}), got {features.shape}")
    return np.ascontiguousarray(features, dtype=FEATURE_WIRE_DTYPE).tobytes()


def unpack_users(values: list[bytes]) -> F32:
    """Unpack user values into an (n, 30) float32 array; a value of the wrong length raises ValueError."""
    for v in values:
        if len(v) != USER_VALUE_BYTES:
            raise ValueError(f"user value has {len(v)} bytes, expected {USER_VALUE_BYTES}")
    out = np.frombuffer(b"".join(values), dtype=FEATURE_WIRE_DTYPE).reshape(len(values), USER_FEATURE_COUNT)
    return out.astype(np.float32)


def quantize_coords(latitude: F64, longitude: F64) -> npt.NDArray[np.int32]:
    """Coordinates in 1e-7 degree units, as stored (an (n, 2) int32 array)."""
    coords = np.stack([latitude, longitude], axis=1) * COORD_SCALE
    return np.rint(coords).astype(np.int32)


def pack_restaurants(latitude: F64, longitude: F64, features: npt.NDArray[np.floating]) -> bytes:
    """Pack n restaurants into n consecutive values (slice every RESTAURANT_VALUE_BYTES)."""
    n = len(latitude)
    if features.shape != (n, RESTAURANT_FEATURE_COUNT) or len(longitude) != n:
        raise ValueError(
            f"restaurant arrays disagree: {n} lat, {len(longitude)} lng, features {features.shape}"
        )
    record = np.dtype(
        [("coord", COORD_WIRE_DTYPE, (2,)), ("f", FEATURE_WIRE_DTYPE, (RESTAURANT_FEATURE_COUNT,))]
    )
    packed = np.empty(n, dtype=record)
    packed["coord"] = quantize_coords(latitude, longitude)
    packed["f"] = features
    return packed.tobytes()


@dataclass(frozen=True)
class Restaurants:
    """Unpacked restaurant values: coordinates in degrees (float64) and float32 features."""

    latitude: F64
    longitude: F64
    features: F32


def unpack_restaurants(values: list[bytes]) -> Restaurants:
    """Unpack restaurant values; a value of the wrong length raises ValueError."""
    for v in values:
        if len(v) != RESTAURANT_VALUE_BYTES:
            raise ValueError(f"restaurant value has {len(v)} bytes, expected {RESTAURANT_VALUE_BYTES}")
    raw = np.frombuffer(b"".join(values), dtype=np.uint8).reshape(len(values), RESTAURANT_VALUE_BYTES)
    coords = raw[:, :8].copy().view(COORD_WIRE_DTYPE).astype(np.float64) / COORD_SCALE
    feats = raw[:, 8:].copy().view(FEATURE_WIRE_DTYPE).astype(np.float32)
    return Restaurants(latitude=coords[:, 0], longitude=coords[:, 1], features=feats)


FLOAT32_MAX: Final = float(np.finfo(np.float32).max)


def _checked_features(values: Sequence[float], count: int) -> npt.NDArray[np.float64]:
    arr = np.asarray(values, dtype=np.float64).reshape(1, -1)
    if arr.shape[1] != count:
        raise ValueError(f"{arr.shape[1]} values, expected {count}")
    if not np.isfinite(arr).all() or (np.abs(arr) > FLOAT32_MAX).any():
        raise ValueError("values must be finite float32")
    return arr


def user_value(features: Sequence[float]) -> bytes:
    """One user's stored value for a live update, checked (30 finite float32 numbers; ValueError otherwise).

    The checks live here, not in a writer, so that every writer of single entities (the feature-store CLI, the
    gateway's admin endpoint) refuses exactly the same inputs.
    """
    return pack_users(_checked_features(features, USER_FEATURE_COUNT))


def restaurant_value(latitude: float, longitude: float, features: Sequence[float]) -> bytes:
    """One restaurant's stored value for a live update, checked (WGS84 range, 10 finite float32 numbers)."""
    arr = _checked_features(features, RESTAURANT_FEATURE_COUNT)
    if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        raise ValueError(f"coordinates {latitude}, {longitude} out of range")
    return pack_restaurants(np.array([latitude]), np.array([longitude]), arr)


def split_values(buffer: bytes, width: int) -> list[bytes]:
    """Cut a packed buffer into per-entity values."""
    if len(buffer) % width:
        raise ValueError(f"buffer of {len(buffer)} bytes is not a multiple of {width}")
    return [buffer[i : i + width] for i in range(0, len(buffer), width)]
