"""Reading the registry: list complete versions, describe one, download-and-verify it into a local cache.

A version is visible only once its ``manifest.json`` exists (publish writes it last), and nothing is handed to a
caller before every file's sha256 and size match the manifest: a reader can never load half a model or a tampered
one. A manifest is parsed (file names limited to the known set, registry_format) before any file is fetched, so a
forged one cannot make a reader write outside the version's cache directory.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError

from forkcast_contract.registry_format import (
    MANIFEST_FILE,
    MODELS_PREFIX,
    VersionManifest,
    is_version,
    version_prefix,
    version_uri,
)
from forkcast_registry.digest import bytes_digest, file_digest
from forkcast_registry.errors import IntegrityError, VersionNotFoundError
from forkcast_registry.s3 import S3Store
from forkcast_registry.settings import RegistrySettings


@dataclass(frozen=True)
class VersionListing:
    """One version prefix found in the bucket; ``complete`` is False while it has no manifest."""

    version: str
    complete: bool
    last_modified: datetime


@dataclass(frozen=True)
class LocalVersion:
    """A verified copy of a version in the local cache."""

    path: Path
    manifest: VersionManifest
    manifest_sha256: str

    def file(self, name: str) -> Path:
        return self.path / name


@dataclass
class ModelRegistry:
    """The versions of one model name in one bucket."""

    store: S3Store
    model_name: str
    cache_dir: Path

    @classmethod
    def from_settings(cls, settings: RegistrySettings) -> ModelRegistry:
        return cls(S3Store.from_settings(settings), settings.model_name, settings.cache_dir)

    def uri(self, version: str) -> str:
        return version_uri(self.store.bucket, self.model_name, version)

    def key(self, version: str, name: str) -> str:
        return version_prefix(self.model_name, version) + name

    def scan(self) -> list[VersionListing]:
        """Every version prefix, complete or not, oldest first (version ids sort by time)."""
        seen: dict[str, tuple[bool, datetime]] = {}
        root = f"{MODELS_PREFIX}/{self.model_name}/"
        for key, modified in self.store.list_keys(root):
            version, _, name = key[len(root) :].partition("/")
            complete, newest = seen.get(version, (False, modified))
            seen[version] = (complete or name == MANIFEST_FILE, max(newest, modified))
        return [VersionListing(v, c, m) for v, (c, m) in sorted(seen.items()) if is_version(v)]

    def list_versions(self) -> list[str]:
        """Complete versions only, oldest first."""
        return [v.version for v in self.scan() if v.complete]

    def _manifest_bytes(self, version: str) -> bytes:
        if not is_version(version):
            raise VersionNotFoundError(
                f"{version!r} is not a version id (expected e.g. 20260101T120000Z-0123abcd)"
            )
        data = self.store.get(self.key(version, MANIFEST_FILE))
        if data is None:
            raise VersionNotFoundError(
                f"no complete version {version} of {self.model_name} in s3://{self.store.bucket} "
                "(absent, or its upload never reached the manifest)"
            )
        return data

    @staticmethod
    def _parse(version: str, data: bytes) -> VersionManifest:
        try:
            manifest = VersionManifest.model_validate_json(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise IntegrityError(
                version,
                MANIFEST_FILE,
                f"not a valid manifest: {exc.error_count()} errors, first at {where or 'top'}: {first['msg']}",
            ) from exc
        if manifest.version != version:
            raise IntegrityError(version, MANIFEST_FILE, f"names version {manifest.version}")
        return manifest

    def describe(self, version: str) -> VersionManifest:
        return self._parse(version, self._manifest_bytes(version))

    def latest(self) -> str | None:
        versions = self.list_versions()
        return versions[-1] if versions else None

    def download(self, version: str, expected_manifest_sha256: str | None = None) -> LocalVersion:
        """Verified local copy of ``version``; a cached copy is re-hashed, not trusted.

        ``expected_manifest_sha256`` (from the release file) pins the whole version: a manifest that differs from
        the promoted one is refused even if it is self-consistent.
        """
        final = self.cache_dir / self.model_name / version
        if (final / MANIFEST_FILE).is_file():
            try:
                return self._verify_local(version, final, expected_manifest_sha256)
            except IntegrityError:
                shutil.rmtree(final)  # a damaged cache entry is replaced by a fresh download
        raw = self._manifest_bytes(version)
        self._check_pin(version, raw, expected_manifest_sha256)
        manifest = self._parse(version, raw)
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=final.parent))
        try:
            for name, digest in manifest.files.items():
                data = self.store.get(self.key(version, name))
                if data is None:
                    raise IntegrityError(version, name, "listed in the manifest but missing in S3")
                got = bytes_digest(data)
                if got != digest:
                    raise IntegrityError(
                        version,
                        name,
                        f"sha256 {got.sha256[:12]}… size {got.size}, manifest says "
                        f"{digest.sha256[:12]}… size {digest.size}",
                    )
                (staging / name).write_bytes(data)
            (staging / MANIFEST_FILE).write_bytes(raw)
            try:
                staging.rename(final)  # atomic: the cache holds whole verified versions only
            except OSError:
                if not (final / MANIFEST_FILE).is_file():  # not a concurrent download of the same version
                    raise
        finally:
            if staging.exists():
                shutil.rmtree(staging)
        return self._verify_local(version, final, expected_manifest_sha256)

    @staticmethod
    def _check_pin(version: str, raw: bytes, expected: str | None) -> None:
        if expected is not None and bytes_digest(raw).sha256 != expected:
            raise IntegrityError(version, MANIFEST_FILE, f"sha256 is not the pinned {expected[:12]}…")

    def _verify_local(self, version: str, path: Path, expected: str | None) -> LocalVersion:
        raw = (path / MANIFEST_FILE).read_bytes()
        self._check_pin(version, raw, expected)
        manifest = self._parse(version, raw)
        for name, digest in manifest.files.items():
            target = path / name
            if not target.is_file():
                raise IntegrityError(version, name, "missing from the cache")
            got = file_digest(target)
            if got != digest:
                raise IntegrityError(
                    version, name, f"cached sha256 {got.sha256[:12]}… differs from the manifest"
                )
        return LocalVersion(path=path, manifest=manifest, manifest_sha256=bytes_digest(raw).sha256)
