"""The Workflow's first step: download a published dataset from S3 and verify every file against its dataset.json.

Why a step of its own: no step of the training Workflow may read a runner's or a node's disk, so the dataset comes
from S3, named by a workflow parameter (an ``s3://bucket/prefix/`` URI of a directory holding `dataset.json` and
the files it lists, as `forkcast-data generate` writes them). Until the lake issue lands this is the only way data
reaches the cluster. Each file is streamed to disk while its sha256 is computed, then compared with the size and
sha256 `dataset.json` records (`forkcast_contract.dataset.FileEntry`): a corrupted or replaced file is refused with
its name, never trained on. `dataset.json` is written last, so its presence marks a complete download, exactly as
in a directory `forkcast-data generate` wrote (`forkcast_contract.dataset.read_manifest` relies on that).

Run as ``python -m forkcast_retrain.dataset_fetch --dataset s3://B/datasets/D/ --out DIR``; the S3 endpoint and
credentials come from S3_ENDPOINT_URL / AWS_* (`forkcast_registry.settings.RegistrySettings`), the bucket from the
URI.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from forkcast_contract.dataset import DATASET_MANIFEST_FILE, DatasetManifest, FileEntry
from forkcast_registry.errors import RegistryError
from forkcast_registry.s3 import S3Store, is_not_found
from forkcast_registry.settings import RegistrySettings
from forkcast_retrain.errors import DataError

_CHUNK = 1 << 20  # bytes per read of an S3 body: bounded memory whatever the file size (user table: ~250 MB)
_PARTIAL = ".partial"


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix/`` → (bucket, ``some/prefix/``); the prefix always ends with one slash."""
    if not uri.startswith("s3://"):
        raise DataError(f"dataset {uri!r} is not an s3:// URI (expected s3://<bucket>/<dataset directory>/)")
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not bucket or not prefix.strip("/"):
        raise DataError(f"dataset {uri!r} names no directory: expected s3://<bucket>/<dataset directory>/")
    return bucket, prefix.strip("/") + "/"


def _safe_relative(entry: FileEntry, uri: str) -> PurePosixPath:
    """The entry's path, refused when it would land outside the output directory (absolute or with ``..``)."""
    rel = PurePosixPath(entry.path)
    if rel.is_absolute() or not rel.parts or ".." in rel.parts:
        raise DataError(f"{uri}{DATASET_MANIFEST_FILE} lists {entry.path!r}: not a path inside the dataset")
    return rel


def read_remote_manifest(store: S3Store, prefix: str) -> DatasetManifest:
    """The dataset.json under ``prefix``; a DataError naming the URI when it is absent or not a manifest."""
    uri = f"s3://{store.bucket}/{prefix}"
    body = store.get(prefix + DATASET_MANIFEST_FILE)
    if body is None:
        raise DataError(
            f"{uri} has no {DATASET_MANIFEST_FILE}: not a published forkcast dataset (or not completely uploaded)"
        )
    try:
        return DatasetManifest.model_validate_json(body)
    except ValidationError as exc:
        raise DataError(f"{uri}{DATASET_MANIFEST_FILE} is not a forkcast dataset manifest: {exc}") from exc


def _download_verified(store: S3Store, key: str, entry: FileEntry, dest: Path, uri: str) -> None:
    """Stream one object to ``dest`` (via a .partial file), refusing it unless size and sha256 match ``entry``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + _PARTIAL)
    digest, size = hashlib.sha256(), 0
    try:
        body = store.client.get_object(Bucket=store.bucket, Key=key)["Body"]
        with partial.open("wb") as fh:
            for chunk in body.iter_chunks(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                fh.write(chunk)
    except ClientError as exc:
        partial.unlink(missing_ok=True)
        if is_not_found(exc):
            raise DataError(
                f"{uri}{entry.path} is listed in {DATASET_MANIFEST_FILE} but missing from S3"
            ) from exc
        raise store.translate(exc, f"get {key}") from exc
    except BotoCoreError as exc:
        partial.unlink(missing_ok=True)
        raise store.translate(exc, f"get {key}") from exc
    if size != entry.bytes or digest.hexdigest() != entry.sha256:
        partial.unlink(missing_ok=True)
        raise DataError(
            f"{uri}{entry.path} is corrupted: {size} bytes with sha256 {digest.hexdigest()}, but "
            f"{DATASET_MANIFEST_FILE} records {entry.bytes} bytes with sha256 {entry.sha256}; refusing to train on it"
        )
    partial.replace(dest)


def fetch_dataset(
    store: S3Store, prefix: str, out: Path, log: Callable[[str], None] = print
) -> DatasetManifest:
    """Download every file ``dataset.json`` under ``prefix`` lists into ``out``, verified; then dataset.json."""
    uri = f"s3://{store.bucket}/{prefix}"
    manifest = read_remote_manifest(store, prefix)
    if not manifest.files:
        raise DataError(f"{uri}{DATASET_MANIFEST_FILE} lists no files")
    out.mkdir(parents=True, exist_ok=True)
    # A rerun into the same directory (a retried pod) counts as complete again only once every file verified.
    (out / DATASET_MANIFEST_FILE).unlink(missing_ok=True)
    total = 0
    for i, entry in enumerate(manifest.files, 1):
        rel = _safe_relative(entry, uri)
        _download_verified(store, prefix + entry.path, entry, out.joinpath(*rel.parts), uri)
        total += entry.bytes
        log(f"[{i}/{len(manifest.files)}] {entry.path}: {entry.bytes:,} bytes, sha256 verified")
    (out / DATASET_MANIFEST_FILE).write_bytes(manifest.model_dump_json(indent=2).encode())
    log(
        f"dataset {uri} ({manifest.preset}, fingerprint {manifest.fingerprint[:12]}): {total:,} bytes in {out}"
    )
    return manifest


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m forkcast_retrain.dataset_fetch", description=__doc__)
    parser.add_argument(
        "--dataset",
        required=True,
        help="s3://<bucket>/<dataset directory>/ holding dataset.json and its files",
    )
    parser.add_argument("--out", type=Path, required=True, help="directory to download into (created)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        bucket, prefix = parse_s3_uri(args.dataset)
        store = S3Store.from_settings(RegistrySettings().model_copy(update={"bucket": bucket}))
        fetch_dataset(store, prefix, args.out, log=lambda line: print(line, flush=True))
    except (DataError, RegistryError, ValidationError) as exc:
        print(f"fetch-data: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
