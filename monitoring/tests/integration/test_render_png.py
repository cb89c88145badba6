"""render_png end to end: simulated series backfilled into a real Prometheus, every panel drawn with data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from forkcast_monitoring import dashboards, render_png


@pytest.mark.slow
@pytest.mark.usefixtures("promtool")
def test_every_panel_renders_with_data_from_a_real_prometheus(tmp_path: Path) -> None:
    render_png.main(["--out", str(tmp_path)])  # raises if any panel's query returns no series
    pngs = sorted(tmp_path.glob("*.png"))
    board = dashboards.overview().build()
    assert len(pngs) == len([p for p in board.panels or [] if getattr(p, "type_val", "") != "row"])
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_queries_are_sent_with_the_namespace_the_dashboard_opens_on() -> None:
    board = json.loads(dashboards.render("forkcast-overview.json"))
    values = render_png.variables(board)
    assert values == {dashboards.NAMESPACE_VAR: dashboards.DEFAULT_NAMESPACE}
    sent = [render_png.substitute(t["expr"], values) for p in board["panels"] for t in p.get("targets", [])]
    assert sent and all('namespace="forkcast"' in e and "$" not in e for e in sent), sent
    assert (
        render_png.substitute('up{a="${namespace}",b="[[namespace]]"}', values)
        == 'up{a="forkcast",b="forkcast"}'
    )


def test_a_query_variable_the_dashboard_does_not_define_is_named() -> None:
    with pytest.raises(KeyError, match=r"variable \$cluster"):
        render_png.substitute('up{namespace="$namespace",cluster="$cluster"}', {"namespace": "forkcast"})
