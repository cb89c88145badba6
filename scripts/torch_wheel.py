"""Put the CPU torch wheel that uv.lock pins where the lock names it, so that `make setup` works on any machine.

uv.lock takes torch from a repository-relative path (root pyproject.toml, ``[tool.uv.sources]``) with its sha256,
because the CPU build is not on PyPI and PyPI's Linux torch 2.13.0 (a 502 MiB wheel) pulls 19 CUDA packages of about
2 GiB (``nvidia-*``, ``cuda-*``, ``triton``). This step, run by `make setup` before ``uv sync --locked``, fills that
path by the first route that applies:

1. the wheel is already there with the locked sha256: nothing to do;
2. a local wheel folder holds it (``FORKCAST_TORCH_WHEELS``, default ``/opt/wheels``, where the development
   machines keep it): a symbolic link to it, after checking its sha256;
3. otherwise PyTorch's CPU index (``FORKCAST_TORCH_INDEX_URL``, default https://download.pytorch.org/whl/cpu, the
   index the retrain Dockerfile installs from): the file is found on the index's project page and downloaded
   (~183 MiB); the sha256 the page lists (when it lists one) and that of the downloaded bytes must be the lock's.

The lock is the one source of truth for the file name and the hash; uv verifies the hash again when it installs.
Standard library only: it runs with the Python of ``.tools/`` before the project's virtual environment exists.
Exit status 0 when the wheel is in place, 1 with the reason otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tomllib
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import BinaryIO

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WHEEL_DIR = "/opt/wheels"
DEFAULT_INDEX_URL = "https://download.pytorch.org/whl/cpu"
CHUNK = 1 << 20

Opener = Callable[[str], BinaryIO]


class WheelError(RuntimeError):
    """The wheel cannot be put in place; the message says which route failed and why."""


@dataclass(frozen=True)
class LockedWheel:
    """torch as uv.lock pins it: where uv installs it from (relative to the repository) and its sha256."""

    path: str
    filename: str
    sha256: str


@dataclass(frozen=True)
class Plan:
    """The route chosen for this machine: ``present``, ``link`` (to ``origin``) or ``download`` (from ``origin``)."""

    route: str
    origin: str


def locked_torch(lock_text: str) -> LockedWheel:
    """The torch entry of uv.lock; refuses a lock that does not take torch from a relative path with a hash."""
    entries = [p for p in tomllib.loads(lock_text)["package"] if p["name"] == "torch"]
    if len(entries) != 1:
        raise WheelError(f"uv.lock has {len(entries)} torch entries; expected exactly one")
    entry = entries[0]
    path = entry.get("source", {}).get("path")
    wheels = entry.get("wheels", [])
    if path is None or Path(path).is_absolute() or len(wheels) != 1 or "hash" not in wheels[0]:
        raise WheelError(
            f"uv.lock's torch is not one wheel at a repository-relative path with a hash: {entry.get('source')}"
        )
    algorithm, _, digest = str(wheels[0]["hash"]).partition(":")
    if algorithm != "sha256":
        raise WheelError(f"uv.lock pins torch with {algorithm}, expected sha256")
    return LockedWheel(path=path, filename=str(wheels[0]["filename"]), sha256=digest)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def choose(locked: LockedWheel, root: Path, wheel_dir: Path, index_url: str) -> Plan:
    """Which route this machine takes (the module docstring's order); reads only the local files."""
    target = root / locked.path
    if target.is_file() and sha256_of(target) == locked.sha256:
        return Plan("present", str(target))
    local = wheel_dir / locked.filename
    if local.is_file():
        found = sha256_of(local)
        if found != locked.sha256:
            raise WheelError(
                f"{local} has sha256 {found} but uv.lock pins {locked.sha256}: "
                f"remove it or point FORKCAST_TORCH_WHEELS elsewhere"
            )
        return Plan("link", str(local))
    return Plan("download", f"{index_url.rstrip('/')}/torch/")


class _Anchors(HTMLParser):
    """The ``<a href>`` elements of a simple-API project page, as (text, href) pairs."""

    def __init__(self) -> None:
        super().__init__()
        self.anchors: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href, self._text = dict(attrs).get("href"), []

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.anchors.append(("".join(self._text).strip(), self._href))
            self._href = None


def wheel_link(page_html: str, page_url: str, filename: str) -> tuple[str, str | None]:
    """The download URL of ``filename`` on a project page and the sha256 the page lists for it (None if none).

    Follows the simple repository API's HTML form (https://packaging.python.org/en/latest/specifications/
    simple-repository-api/): one anchor per file, its text the file name, its href resolved against the page URL,
    and an optional ``#<hashname>=<hexdigest>`` fragment.
    """
    parser = _Anchors()
    parser.feed(page_html)
    for text, href in parser.anchors:
        url, _, fragment = href.partition("#")
        name = text or urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
        if name == filename:
            algorithm, _, digest = fragment.partition("=")
            return urllib.parse.urljoin(page_url, url), digest if algorithm == "sha256" else None
    raise WheelError(f"{page_url} does not list {filename}")


def _open(url: str) -> BinaryIO:
    return urllib.request.urlopen(url, timeout=60)  # type: ignore[no-any-return]


def download(locked: LockedWheel, page_url: str, target: Path, opener: Opener = _open) -> str:
    """Download the locked wheel from the index page at ``page_url`` to ``target``; returns the file's URL.

    Refuses before downloading when the index lists another sha256 than the lock, and after it when the bytes do
    not match; a partial or refused file never lands at ``target``.
    """
    try:
        with opener(page_url) as page:
            url, listed = wheel_link(page.read().decode("utf-8"), page_url, locked.filename)
    except OSError as exc:  # urllib's URLError and HTTPError are OSErrors
        raise WheelError(f"cannot read the index page {page_url}: {exc}") from exc
    if listed is not None and listed != locked.sha256:
        raise WheelError(
            f"{page_url} lists sha256 {listed} for {locked.filename}, uv.lock pins {locked.sha256}"
        )
    partial = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    try:
        try:
            with opener(url) as response, partial.open("wb") as out:
                while chunk := response.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
        except OSError as exc:
            raise WheelError(f"cannot download {url} to {partial}: {exc}") from exc
        if digest.hexdigest() != locked.sha256:
            raise WheelError(f"{url} has sha256 {digest.hexdigest()}, uv.lock pins {locked.sha256}")
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return url


def ensure(
    locked: LockedWheel, root: Path, wheel_dir: Path, index_url: str, opener: Opener = _open
) -> str | None:
    """Carry out the chosen route; returns a one-line account of what was done (None: it was already there)."""
    plan = choose(locked, root, wheel_dir, index_url)
    target = root / locked.path
    if plan.route == "present":
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():
        target.unlink()  # a stale link or a file with the wrong hash
    if plan.route == "link":
        target.symlink_to(plan.origin)
        return f"torch wheel: {locked.path} -> {plan.origin} (local wheel folder)"
    print(f"torch wheel: downloading {locked.filename} from {plan.origin} (~183 MiB, once)", file=sys.stderr)
    url = download(locked, plan.origin, target, opener)
    return f"torch wheel: {locked.path} downloaded from {url}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="torch_wheel.py", description=__doc__.splitlines()[0])
    parser.add_argument("--lock", type=Path, default=ROOT / "uv.lock", help="the lock file naming the wheel")
    parser.add_argument(
        "--wheel-dir",
        type=Path,
        default=Path(os.environ.get("FORKCAST_TORCH_WHEELS", DEFAULT_WHEEL_DIR)),
        help="local folder that may hold the wheel (env FORKCAST_TORCH_WHEELS, default %(default)s)",
    )
    parser.add_argument(
        "--index-url",
        default=os.environ.get("FORKCAST_TORCH_INDEX_URL", DEFAULT_INDEX_URL),
        help="simple-API index to download from otherwise (env FORKCAST_TORCH_INDEX_URL, default %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        locked = locked_torch(args.lock.read_text())
        done = ensure(locked, args.lock.parent, args.wheel_dir, args.index_url)
    except (WheelError, OSError) as exc:
        print(f"torch wheel: {exc}", file=sys.stderr)
        return 1
    if done is not None:
        print(done)
    return 0


if __name__ == "__main__":
    sys.exit(main())
