"""render_png end to end: simulated series backfilled into a real Prometheus, every panel drawn with data."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from forkcast_monitoring import dashboards, render_png


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("promtool") is None,
    reason="prometheus/promtool missing (Debian package prometheus)",
)
def test_every_panel_renders_with_data_from_a_real_prometheus(tmp_path: Path) -> None:
    render_png.main(["--out", str(tmp_path)])  # raises if any panel's query returns no series
    pngs = sorted(tmp_path.glob("*.png"))
    board = dashboards.overview().build()
    assert len(pngs) == len([p for p in board.panels or [] if getattr(p, "type_val", "") != "row"])
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
