"""Grafana dashboards as code: ``python -m forkcast_monitoring.dashboards --out monitoring/dashboards/``.

Built with grafana-foundation-sdk (Grafana's own typed builders, pure Python, no network), so the JSON follows the
dashboard schema Grafana ships rather than hand-written dicts. Every query names metrics only through
``forkcast_contract.metric_names`` and reads the Prometheus datasource through one variable whose default is the
fixed uid ``DATASOURCE_UID`` (the provisioned datasource), so a panel can never point at a datasource by accident.

One dashboard serves every forkcast namespace of the cluster (it ships once, from manifests/observability): the
template variable ``namespace`` (label values of the inference served-info, default the prod namespace) picks one,
and every selector of every query carries ``namespace="$namespace"`` (``selector``), so dev and prod series are never
summed together. Grafana substitutes the variable before it sends a query (render_png does the same).

Panels use raw expressions over fixed 5-minute windows rather than the recording rules: the rules only exist from the
moment Prometheus evaluates them, so a backfilled Prometheus (render_png) and a fresh install would show empty panels.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    VariableOption,
    VariableRefresh,
    VariableSort,
)

from forkcast_contract import metric_names as m

DATASOURCE_UID = "forkcast-prometheus"
DATASOURCE_VAR = "datasource"
NAMESPACE_VAR = "namespace"
# The namespace the dashboard opens on: prod's (manifests/overlays/prod; a test keeps the two equal).
DEFAULT_NAMESPACE = "forkcast"
# The variable's choices: the namespaces where an inference pod reports the model it serves, i.e. every forkcast
# environment (Grafana's Prometheus "label values" query; grafana.com/docs/grafana/latest/datasources/prometheus/
# template-variables).
NAMESPACE_QUERY = f"label_values({m.INFERENCE_SERVED}_info, namespace)"
OVERVIEW_UID = "forkcast-overview"
WINDOW = "5m"
GATEWAY_5XX = 'status_class="5xx"'
INFERENCE_5XX = 'status="5xx"'


def selector(*matchers: str) -> str:
    """A label selector holding the namespace filter and ``matchers``: the only way a query here selects series."""
    return "{" + ",".join((f'namespace="${NAMESPACE_VAR}"', *matchers)) + "}"


def auc_floor(matchers: str = "") -> str:
    """OnlineAucLow's floor per version, the expression of the recording rule forkcast:online_auc_floor with
    ``matchers`` on its one selector (a test keeps ``auc_floor()`` equal to the rule): the panel shows the line the
    alert fires under."""
    return f"clamp_min(max by (namespace, model_version) ({m.INFERENCE_MODEL_OFFLINE_AUC}{matchers}) - 0.05, 0.70)"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class PanelSpec:
    """One time-series panel: what it shows, in which unit, from which queries."""

    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]


@dataclass(frozen=True)
class RowSpec:
    title: str
    panels: tuple[PanelSpec, ...]


def quantiles(histogram: str, service: str) -> PanelSpec:
    """p50/p95/p99 over all pods from a histogram's buckets (the quantile Prometheus interpolates within a bucket)."""
    rate = f"sum by (le) (rate({histogram}_bucket{selector()}[{WINDOW}]))"
    return PanelSpec(
        title=f"{service} latency p50 / p95 / p99",
        description=f"histogram_quantile over {histogram}; SPEC §7: p95 under 100 ms through the gateway.",
        unit="s",
        queries=tuple(
            Query(f"histogram_quantile({q}, {rate})", f"p{round(q * 100)}") for q in (0.5, 0.95, 0.99)
        ),
    )


def served(metric: str) -> str:
    """``metric`` (labelled model_version) per pod template hash, joined through the inference served-info like the
    canary AnalysisTemplate (rollouts/analysis-templates.yaml): the hash tells canary pods from stable ones."""
    return (
        f"max by (rollouts_pod_template_hash, model_version) ({m.INFERENCE_SERVED}_info{selector()})"
        f" * on (model_version) group_left () max by (model_version) ({metric}{selector()})"
    )


def gateway_rate(*matchers: str) -> str:
    return f"rate({m.GATEWAY_REQUESTS_TOTAL}{selector(*matchers)}[{WINDOW}])"


def inference_rate(*matchers: str) -> str:
    return f"rate({m.INFERENCE_REQUEST_SECONDS}_count{selector(*matchers)}[{WINDOW}])"


def latest(metric: str, by: str = "model_version") -> str:
    """``metric`` of the chosen namespace, the highest value per ``by`` (one series per version, not per pod)."""
    return f"max by ({by}) ({metric}{selector()})"


OVERVIEW: tuple[RowSpec, ...] = (
    RowSpec(
        "Service latency",
        (
            quantiles(m.GATEWAY_REQUEST_DURATION_SECONDS, "Gateway"),
            quantiles(m.INFERENCE_REQUEST_SECONDS, "Inference"),
        ),
    ),
    RowSpec(
        "Traffic and errors",
        (
            PanelSpec(
                "Requests per second by service and status class",
                "Gateway by status_class, inference by status.",
                "reqps",
                (
                    Query(f"sum by (status_class) ({gateway_rate()})", "gateway {{status_class}}"),
                    Query(f"sum by (status) ({inference_rate()})", "inference {{status}}"),
                ),
            ),
            PanelSpec(
                "Server error ratio by service",
                "Share of 5xx answers; the canary analysis fails the inference canary above 1 %.",
                "percentunit",
                (
                    Query(f"sum({gateway_rate(GATEWAY_5XX)}) / sum({gateway_rate()})", "gateway"),
                    Query(f"sum({inference_rate(INFERENCE_5XX)}) / sum({inference_rate()})", "inference"),
                ),
            ),
        ),
    ),
    RowSpec(
        "Online AUC",
        (
            PanelSpec(
                "Online AUC per model version (95 % interval)",
                "Absent below the job's minimum joined pairs: no value means not enough data, not 0.5. The floor is"
                " the version's offline AUC - 0.05 (at least 0.70): OnlineAucLow fires 10 minutes under it.",
                "none",
                (
                    Query(latest(m.ONLINE_AUC), "{{model_version}}"),
                    Query(latest(m.ONLINE_AUC_LOWER), "{{model_version}} lower"),
                    Query(latest(m.ONLINE_AUC_UPPER), "{{model_version}} upper"),
                    Query(auc_floor(selector()), "{{model_version}} alert floor"),
                ),
            ),
            PanelSpec(
                "Labelled predictions in the AUC window",
                "Joined pairs and positives per model version; the canary analysis needs 2000 pairs per side.",
                "short",
                (
                    Query(latest(m.ONLINE_AUC_SAMPLES), "{{model_version}} pairs"),
                    Query(latest(m.ONLINE_AUC_POSITIVES), "{{model_version}} positives"),
                ),
            ),
            PanelSpec(
                "Canary vs stable: online AUC per pod template hash",
                "Each Rollout ReplicaSet (pod template hash) with the AUC of the model version it serves.",
                "none",
                (Query(served(m.ONLINE_AUC), "{{rollouts_pod_template_hash}} ({{model_version}})"),),
            ),
        ),
    ),
    RowSpec(
        "Drift",
        (
            PanelSpec(
                "Feature PSI per model input",
                "PSI of served features against the training profile; FeatureDriftHigh triggers retraining.",
                "none",
                (Query(latest(m.DRIFT_FEATURE_PSI, "model_version, feature"), "{{feature}}"),),
            ),
            PanelSpec(
                "Score PSI",
                "Served scores against the version's probe-set scores (top-k selections: read as a trend).",
                "none",
                (Query(latest(m.DRIFT_SCORE_PSI), "{{model_version}}"),),
            ),
        ),
    ),
    RowSpec(
        "Model in service",
        (
            PanelSpec(
                "Model and feature versions in service (pods)",
                "Inference pods per (model version, feature version).",
                "short",
                (
                    Query(
                        f"count by (model_version, feature_version) ({m.INFERENCE_SERVED}_info{selector()})",
                        "{{model_version}} / {{feature_version}}",
                    ),
                ),
            ),
            PanelSpec(
                "Model age",
                "Time since the served version was published; ModelTooOld fires past its max age.",
                "s",
                (
                    Query(
                        f"time() - {latest(m.INFERENCE_MODEL_PUBLISHED_TIME)}",
                        "{{model_version}}",
                    ),
                ),
            ),
            PanelSpec(
                "Retraining triggers",
                "Pipeline triggers the alert receiver sent to GitLab, by outcome (sent, cooldown, failed, …).",
                "short",
                (
                    Query(
                        f"sum by (outcome) (increase({m.RETRAIN_TRIGGERS_TOTAL}{selector()}[1h]))",
                        "{{outcome}}",
                    ),
                ),
            ),
        ),
    ),
)


def panel(spec: PanelSpec, panel_id: int, width: int) -> timeseries.Panel:
    ref = DataSourceRef(type_val="prometheus", uid=f"${{{DATASOURCE_VAR}}}")
    built = (
        timeseries.Panel()
        .id(panel_id)
        .title(spec.title)
        .description(spec.description)
        .datasource(ref)
        .unit(spec.unit)
        .height(8)
        .span(width)
    )
    for i, q in enumerate(spec.queries):
        built = built.with_target(
            prometheus.Dataquery()
            .expr(q.expr)
            .legend_format(q.legend)
            .ref_id(chr(ord("A") + i))
            .datasource(ref)
            .range()
        )
    return built


def overview() -> dash.Dashboard:
    board = (
        dash.Dashboard("forkcast overview")
        .uid(OVERVIEW_UID)
        .tags(["forkcast"])
        .time("now-6h", "now")
        .refresh("1m")
        .timezone("utc")
        .with_variable(
            dash.DatasourceVariable(DATASOURCE_VAR)
            .label("Prometheus")
            .type("prometheus")
            .current(VariableOption(selected=True, text=DATASOURCE_UID, value=DATASOURCE_UID))
        )
        .with_variable(
            dash.QueryVariable(NAMESPACE_VAR)
            .label("Namespace")
            .datasource(DataSourceRef(type_val="prometheus", uid=f"${{{DATASOURCE_VAR}}}"))
            .query(NAMESPACE_QUERY)
            .refresh(VariableRefresh.ON_DASHBOARD_LOAD)
            .sort(VariableSort.ALPHABETICAL_ASC)
            .current(VariableOption(selected=True, text=DEFAULT_NAMESPACE, value=DEFAULT_NAMESPACE))
        )
    )
    ids = iter(range(1, 1000))  # unique panel ids: Grafana keys links and panel state by them
    for row in OVERVIEW:
        board = board.with_row(dash.Row(row.title).id(next(ids)))
        for spec in row.panels:
            board = board.with_panel(panel(spec, next(ids), 24 // len(row.panels)))
    return board


DASHBOARDS = {"forkcast-overview.json": overview}


def render(name: str) -> str:
    """The dashboard as stable JSON text (sorted keys, trailing newline) so regeneration is byte-identical."""
    return (
        json.dumps(json.loads(JSONEncoder().encode(DASHBOARDS[name]().build())), indent=2, sort_keys=True)
        + "\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the forkcast Grafana dashboards as JSON.")
    parser.add_argument(
        "--out",
        type=Path,
        action="append",
        required=True,
        help="directory for the <uid>.json files; repeat it to write several (the repository keeps them in "
        "monitoring/dashboards/ and, for the kustomize ConfigMap, manifests/observability/dashboards/)",
    )
    args = parser.parse_args(argv)
    for out in args.out:
        out.mkdir(parents=True, exist_ok=True)
        for name in DASHBOARDS:
            (out / name).write_text(render(name))
            print(out / name)


if __name__ == "__main__":
    main()
