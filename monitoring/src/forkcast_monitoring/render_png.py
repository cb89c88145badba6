"""PNG previews of the dashboards from a real Prometheus: ``python -m forkcast_monitoring.render_png --out DIR``.

Why a real Prometheus: the previews then run exactly the PromQL the committed dashboard JSON holds (query_range,
the same evaluation Grafana asks for), so a panel whose query is wrong shows up empty here too. The series come from
prometheus-client registries carrying the contract's metric names and the services' label names, driven through two
hours of simulated traffic (a stable and, after the first hour, a canary inference version; feature drift injected
late), exposed as OpenMetrics with timestamps and backfilled with ``promtool tsdb create-blocks-from openmetrics``
into a temporary data directory before Prometheus starts on a free 127.0.0.1 port. It is stopped by its PID.
Template variables in the queries (``$namespace``) are replaced by the value the dashboard opens on, as Grafana
replaces them before it sends a query; the simulated series carry that namespace.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from forkcast_devservers.servers import Prometheus
from forkcast_monitoring.dashboard_data import STEP_S, simulate
from forkcast_monitoring.dashboards import DASHBOARDS, render

HOURS = 2.0


def backfill(openmetrics: str, data_dir: Path, work: Path) -> None:
    """Write the OpenMetrics text into TSDB blocks under ``data_dir`` (what Prometheus then serves)."""
    source = work / "series.om.txt"
    source.write_text(openmetrics)
    subprocess.run(
        ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(source), str(data_dir)],
        check=True,
        capture_output=True,
        timeout=300,
    )


def query_range(url: str, expr: str, start: float, end: float, step_s: float) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step_s})
    with urllib.request.urlopen(f"{url}/api/v1/query_range?{params}", timeout=30) as resp:
        body = json.loads(resp.read())
    if body["status"] != "success":
        raise RuntimeError(f"{expr}: {body}")
    return list(body["data"]["result"])


def variables(board: dict[str, Any]) -> dict[str, str]:
    """The value each query variable of ``board`` opens on (its ``current``), by variable name."""
    return {
        v["name"]: str(v["current"]["value"])
        for v in board.get("templating", {}).get("list", [])
        if v["type"] == "query"
    }


def substitute(expr: str, values: dict[str, str]) -> str:
    """``expr`` with Grafana's variable syntaxes ``$name``, ``${name}`` and ``[[name]]`` replaced by ``values``;
    raises naming a variable ``values`` lacks (the query would reach Prometheus with a literal ``$name``)."""

    def value(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        if name not in values:
            raise KeyError(f"query uses variable ${name}, which the dashboard does not define: {expr}")
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)|\[\[(\w+)\]\]", value, expr)


def legend(template: str, labels: dict[str, str]) -> str:
    """Grafana's legendFormat: ``{{label}}`` replaced by the series' label value."""
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template) or str(labels)


def draw(ax: Axes, panel: dict[str, Any], values: dict[str, str], url: str, start: float, end: float) -> int:
    """Plot every target of one panel on ``ax``, its variables set to ``values``; returns the series drawn."""
    drawn = 0
    for target in panel["targets"]:
        for series in query_range(url, substitute(target["expr"], values), start, end, STEP_S):
            xs = [(float(t) - end) / 60 for t, _ in series["values"]]
            ys = [float(v) for _, v in series["values"]]
            ax.plot(xs, ys, label=legend(target["legendFormat"], series["metric"]), linewidth=1.4)
            drawn += 1
    unit = panel["fieldConfig"]["defaults"].get("unit", "")
    ax.set_title(panel["title"], fontsize=10)
    ax.set_xlabel("minutes before now")
    ax.set_ylabel({"s": "seconds", "reqps": "requests/s", "percentunit": "ratio"}.get(unit, ""))
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=7, loc="best")
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    return drawn


def slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def render_dashboard(name: str, url: str, start: float, end: float, out: Path) -> list[Path]:
    """One PNG per panel, named ``<dashboard>--<panel title>.png``; raises if a panel shows no data."""
    board = json.loads(render(name))
    values = variables(board)
    written, empty = [], []
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        fig, ax = plt.subplots(figsize=(8, 3.6), dpi=110)
        if not draw(ax, panel, values, url, start, end):
            empty.append(panel["title"])
        fig.tight_layout()
        path = out / f"{Path(name).stem}--{slug(panel['title'])}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    if empty:
        raise RuntimeError(f"panels without data (query or simulated series wrong): {empty}")
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Render every dashboard panel to PNG from a real, backfilled Prometheus "
        "(needs prometheus and promtool on PATH)."
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for the PNG files")
    parser.add_argument("--seed", type=int, default=7, help="seed of the simulated traffic")
    args = parser.parse_args(argv)
    for tool in ("prometheus", "promtool"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} not found on PATH (Debian package prometheus)")
    args.out.mkdir(parents=True, exist_ok=True)
    end = float(int(time.time() // 60 * 60))
    start = end - HOURS * 3600
    with tempfile.TemporaryDirectory(prefix="forkcast-dash-") as tmp:
        work = Path(tmp)
        retention = ["--storage.tsdb.retention.time=30d"]
        server = Prometheus(work / "prometheus", config=work / "prometheus.yml", flags=retention)
        data_dir = server.dir / "tsdb"  # where the server keeps its TSDB: the backfilled blocks go there
        data_dir.mkdir(parents=True)
        backfill(simulate(start, end, args.seed), data_dir, work)
        server.config.write_text("global:\n  scrape_interval: 1m\n")
        with server:
            url = server.url
            # Queries start 10 minutes in: rate() over 5m windows needs history before the first point.
            for name in DASHBOARDS:
                for path in render_dashboard(name, url, start + 600, end, args.out):
                    print(path)


if __name__ == "__main__":
    main()
