"""set-images: pin an overlay's container images to registry digests (kustomize `images:` with newName + digest).

CI builds each image once, records the digest the registry answered (kaniko ``--digest-file``) and writes it
into the dev overlay's ``kustomization.yaml``; the commit rolls the code through the same Argo CD sync and Argo
Rollouts canary as a model release. Prod gets the same digest files (the build job's artifacts, not whatever the
dev overlay holds by then) through the prod merge request. A digest, unlike a tag, names exactly the bytes that
were tested, so a re-pushed tag never changes prod. Without ``--registry`` the repository each pin names is the
overlay's own ``newName`` (reviewed in Git), so no pipeline variable decides where prod pulls from.

Why not ``kustomize edit set image``: kubectl's built-in kustomize has no ``edit`` subcommand (``kubectl
kustomize`` only builds), and the standalone kustomize binary is in neither the CI images nor the lock file. The
edit here is small and textual on purpose: only the top-level ``images:`` block is rewritten, every other line
(comments included) stays byte for byte, and the result is parsed back and compared before it is written.
Kustomize's semantics (sigs.k8s.io/kustomize api/types/image.go): ``name`` matches the image in the manifests,
``newName`` replaces the repository, ``digest`` replaces the tag (``name@digest``); ``digest`` wins over
``newTag``, so an entry carries one or the other, never both.

The retrain image is deployed by no overlay: the CI jobs that hold ``GITOPS_TOKEN`` and the S3/MLflow credentials
run it, and the Argo Workflow they submit runs it too. ``--ci-file .gitlab-ci.yml`` pins it there the same way
(issue 18.3): every literal reference ``<repository>/retrain:main`` or ``<repository>/retrain@sha256:...`` in the
file becomes ``<repository>/retrain@<the digest the build recorded>``, committed in the same release commit as the
dev overlay. A literal in the committed file, not a variable: variables sent with a trigger override the file's
own, so only a commit to the default branch (reviewed, or this job's) decides the code those jobs run. Before the
first release there is no digest to write, and the file holds the tag ``:main`` (the bootstrap; protected by the
"Protected container tags" rule, docs/operations.md). ``--workflow-template workflows/workflowtemplate.yaml`` pins
the Argo WorkflowTemplate's default ``image`` parameter in the same commit, by the same rules (review 59, L7): a
Workflow submitted without an ``image`` runs the released digest, not whatever ``:main`` points at; every file
pinned together must name the same repository, or nothing is written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from forkcast_retrain.errors import DataError

KUSTOMIZATION = "kustomization.yaml"
# The image the CI file runs its secret-holding jobs in: <repository>/retrain, by the bootstrap tag or a digest.
CI_IMAGE = "retrain"
# The Argo WorkflowTemplate whose default ``image`` parameter names the same image (relative to the repository).
WORKFLOW_TEMPLATE = Path("workflows/workflowtemplate.yaml")
BOOTSTRAP_TAG = "main"
IMAGE_PREFIX = "forkcast-"  # the image names the manifests use: forkcast-gateway, forkcast-inference, ...
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_REPOSITORY = re.compile(r"^[a-z0-9][a-z0-9._/:-]*[a-z0-9]$")


@dataclass(frozen=True)
class ImagePin:
    """One kustomize ``images:`` entry: the manifests' image ``name`` becomes ``new_name@digest``."""

    name: str
    new_name: str
    digest: str

    def __post_init__(self) -> None:
        if not _DIGEST.match(self.digest):
            raise DataError(f"image {self.name}: {self.digest!r} is not a sha256 digest (sha256:<64 hex>)")
        if not _REPOSITORY.match(self.new_name) or "@" in self.new_name:
            raise DataError(f"image {self.name}: {self.new_name!r} is not an image repository")

    def entry(self) -> dict[str, str]:
        return {"name": self.name, "newName": self.new_name, "digest": self.digest}

    @property
    def ref(self) -> str:
        return f"{self.new_name}@{self.digest}"


def kustomization_path(repo: Path, overlay: str) -> Path:
    return repo / "manifests" / "overlays" / overlay / KUSTOMIZATION


def read_images(text: str) -> list[dict[str, Any]]:
    """The ``images:`` entries of a kustomization (empty when it has none)."""
    doc = yaml.safe_load(text) or {}
    images = doc.get("images") or []
    if not isinstance(images, list) or not all(isinstance(i, dict) and "name" in i for i in images):
        raise DataError("images: must be a list of mappings with a name")
    return images


def image_ref(text: str, name: str) -> str | None:
    """What the overlay deploys for image ``name``: ``newName@digest``, ``newName:newTag`` or None if unset."""
    for entry in read_images(text):
        if entry["name"] == name:
            repo = entry.get("newName", name)
            if entry.get("digest"):
                return f"{repo}@{entry['digest']}"
            return f"{repo}:{entry['newTag']}" if entry.get("newTag") else str(repo)
    return None


def _block(lines: list[str]) -> tuple[int, int] | None:
    """[start, end) of the top-level ``images:`` block; the block ends at the next top-level key or comment."""
    for i, line in enumerate(lines):
        if re.match(r"^images:\s*(#.*)?$", line):
            end = i + 1
            while end < len(lines) and (lines[end][:1] in (" ", "-", "\t") or not lines[end].strip()):
                end += 1
            while end > i + 1 and not lines[end - 1].strip():  # trailing blank lines belong to what follows
                end -= 1
            return i, end
        if line.startswith("images:"):
            raise DataError("images: is not a block the editor understands (flow style?); edit it by hand")
    return None


def render_images(entries: list[dict[str, Any]]) -> list[str]:
    out = ["images:"]
    for entry in entries:
        out.append(f"  - name: {entry['name']}")
        out.extend(f"    {k}: {entry[k]}" for k in ("newName", "newTag", "digest") if entry.get(k))
    return out


def with_images(text: str, pins: list[ImagePin]) -> str:
    """``text`` with each pin's entry replaced (or appended) in ``images:``; other entries and lines unchanged."""
    return with_entries(text, [pin.entry() for pin in pins])


def with_entries(text: str, replacements: list[dict[str, Any]]) -> str:
    """``text`` with each entry replaced by name (or appended); a digest replaces a newTag and vice versa."""
    entries = [dict(e) for e in read_images(text)]
    for new_entry in replacements:
        found = next((e for e in entries if e["name"] == new_entry["name"]), None)
        if found is None:
            entries.append(dict(new_entry))
        else:
            found.clear()
            found.update(new_entry)
    lines = text.splitlines()
    span = _block(lines)
    block = render_images(entries)
    new_lines = [*lines, *block] if span is None else [*lines[: span[0]], *block, *lines[span[1] :]]
    result = "\n".join(new_lines) + "\n"
    before, after = yaml.safe_load(text) or {}, yaml.safe_load(result)
    before["images"] = entries
    if after != before:  # the textual edit must change exactly the images, nothing else
        raise DataError("rewriting images: would change more than the images; refusing (file layout?)")
    return result


def set_images(path: Path, pins: list[ImagePin]) -> bool:
    """Write the pins into the kustomization at ``path``; False when it already held them (nothing written)."""
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    text = path.read_text()
    new = with_images(text, pins)
    if new == text:
        return False
    path.write_text(new)
    return True


def pins_from_digests(digests: Path, registry: str) -> list[ImagePin]:
    """One pin per ``<image>.digest`` file (kaniko ``--digest-file``): forkcast-<image> -> <registry>/<image>."""
    files = sorted(digests.glob("*.digest"))
    if not files:
        raise DataError(
            f"no <image>.digest files in {digests}: did the build jobs pass them on as artifacts?"
        )
    return [
        ImagePin(f"{IMAGE_PREFIX}{f.stem}", f"{registry.rstrip('/')}/{f.stem}", f.read_text().strip())
        for f in files
    ]


def pins_for_overlay(digests: Path, kustomization_text: str) -> tuple[list[ImagePin], list[str]]:
    """(pins, skipped): one pin per digest file whose image the overlay lists, under the overlay's ``newName``.

    Skipped: digests of images the overlay does not deploy (the retrain image). An image listed without a
    ``newName`` is refused: where would the digest be pulled from?
    """
    listed = {str(e["name"]): e for e in read_images(kustomization_text)}
    pins, skipped = [], []
    for pin in pins_from_digests(digests, "unused.invalid"):
        entry = listed.get(pin.name)
        if entry is None:
            skipped.append(pin.name)
            continue
        if not entry.get("newName"):
            raise DataError(
                f"the overlay lists {pin.name} without newName: say which repository it pulls from"
            )
        pins.append(ImagePin(pin.name, str(entry["newName"]), pin.digest))
    return pins, skipped


def pins_from_overlay(repo: Path, overlay: str) -> list[ImagePin]:
    """The digest-pinned images of another overlay (prod takes dev's tested digests)."""
    entries = read_images(kustomization_path(repo, overlay).read_text())
    pins = [ImagePin(e["name"], e.get("newName", e["name"]), e["digest"]) for e in entries if e.get("digest")]
    if not pins:
        raise DataError(f"overlay {overlay} pins no image by digest; nothing to copy")
    return pins


def _ci_refs(image: str) -> re.Pattern[str]:
    """``<repository>/<image>`` pinned by the bootstrap tag or a digest, as a whole word of the CI file."""
    return re.compile(
        rf"(?<![\w./:@-])(?P<repo>[a-z0-9][a-z0-9.-]*(?::[0-9]+)?(?:/[a-z0-9._-]+)*/{re.escape(image)})"
        rf"(?P<pin>:{BOOTSTRAP_TAG}|@sha256:[0-9a-f]{{64}})(?![\w.:@/-])"
    )


class _GitLabLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships untyped
    """GitLab CI YAML: ``!reference [job, key]`` is a sequence to this loader (only equality is compared)."""


_GitLabLoader.add_constructor("!reference", lambda loader, node: loader.construct_sequence(node))


def _substitute(value: Any, pattern: re.Pattern[str], ref: str) -> Any:
    if isinstance(value, str):
        return pattern.sub(ref, value)
    if isinstance(value, list):
        return [_substitute(v, pattern, ref) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, pattern, ref) for k, v in value.items()}
    return value


def ci_image_refs(text: str, image: str = CI_IMAGE) -> list[str]:
    """Every literal reference to ``image`` in a CI file, in order (``repo/retrain:main`` or ``repo/retrain@...``)."""
    return [m.group(0) for m in _ci_refs(image).finditer(text)]


def ci_image_repository(text: str, image: str = CI_IMAGE) -> str:
    """The one repository a YAML file runs ``image`` from (``<repository>/retrain:main`` or ``@sha256:...``).

    Refused: a file without a reference (nothing would be pinned: renamed image, or a variable again), and one
    naming several repositories (which one did the build push to?)."""
    repos = {m.group("repo") for m in _ci_refs(image).finditer(text)}
    if not repos:
        raise DataError(
            f"the file names no <repository>/{image}:{BOOTSTRAP_TAG} or <repository>/{image}@sha256:... to pin"
        )
    if len(repos) > 1:
        raise DataError(f"the file runs {image} from several repositories: {sorted(repos)}")
    return repos.pop()


def pin_ci_image(text: str, digest: str, image: str = CI_IMAGE) -> str:
    """``text`` (``.gitlab-ci.yml`` or the WorkflowTemplate) with every reference to ``image`` pinned to ``digest``.

    The repository stays the one the file names (reviewed in Git, like an overlay's ``newName``); all references
    must name the same one (``ci_image_repository``). Refused as well: an edit that would change anything but
    those references once parsed (every YAML document compared)."""
    pattern = _ci_refs(image)
    pin = ImagePin(f"{IMAGE_PREFIX}{image}", ci_image_repository(text, image), digest)
    result = pattern.sub(pin.ref, text)
    before = list(yaml.load_all(text, Loader=_GitLabLoader))
    if list(yaml.load_all(result, Loader=_GitLabLoader)) != _substitute(before, pattern, pin.ref):
        raise DataError(f"pinning {image} would change more than its references; refusing")
    return result


def set_ci_image(path: Path, digest: str, image: str = CI_IMAGE) -> bool:
    """Pin ``image`` in the YAML file at ``path``; False when it already named that digest (nothing written)."""
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    text = path.read_text()
    new = pin_ci_image(text, digest, image)
    if new == text:
        return False
    path.write_text(new)
    return True


def digest_of(digests: Path, image: str) -> str:
    """The digest the build recorded for ``image`` (``<digests>/<image>.digest``)."""
    for pin in pins_from_digests(digests, "unused.invalid"):
        if pin.name == f"{IMAGE_PREFIX}{image}":
            return pin.digest
    raise DataError(f"no {image}.digest in {digests}: did the build job of {image} pass it on?")
