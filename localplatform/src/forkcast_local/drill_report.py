"""The end-to-end drill's report: the JSON as measured, and a Markdown page with every stage and the figures."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

TARGETS = {"firing_delay_s": 120.0, "retrain_to_100_s": 300.0}


def _f(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "–"


def render_markdown(r: dict[str, Any]) -> str:
    auc, alert, client = r.get("auc", {}), r.get("alert", {}), r.get("client", {})
    retrain, opts = r.get("retrain", {}), r.get("options", {})
    gate_ci = retrain.get("gate_ci", {})
    stages = r.get("stages") or [{"at": time.strftime("%Y-%m-%dT%H:%M:%S")}]
    started = stages[0]["at"][:16].replace("T", " ") + " " + time.strftime("%Z")
    ci_gate = "passed" if gate_ci.get("passed") else f"FAILED on {gate_ci.get('failed_checks')}"
    allowed = "; ".join(gate_ci.get("drift_allowed", [])) or "none"
    lines = [
        f"# End-to-end drill: {'PASSED' if r.get('ok') else 'FAILED'}",
        "",
        f"Run {started} on {platform.node()} ({platform.machine()}, "
        f"{platform.python_implementation()} {platform.python_version()}); data `{opts.get('data', '?')}`, "
        f"drift {opts.get('drift', '?')}, AUC window {opts.get('window_s', '?')} s, rules' `for:` "
        f"{opts.get('for_s', '?')} s, Rollout time scale ×{opts.get('time_scale', '?')}; the platform of "
        f"manifests/overlays/local in `{r.get('work', '?')}/platform`.",
        "",
    ]
    if "error" in r:
        lines += [f"**Error:** {r['error']}", ""]
    if failed := [name for name, passed in r.get("checks", {}).items() if not passed]:
        lines += [f"**Targets missed:** {', '.join(failed)}", ""]
    lines += [
        "| figure | value | target |",
        "|---|---|---|",
        f"| online AUC before drift | {_f(auc.get('pre_drift'))} | |",
        f"| online AUC drifted (at the alert) | {_f(auc.get('drifted'))} (drop {_f(auc.get('drop'))}) "
        f"| drop ≥ {auc.get('min_drop', 0.05)} |",
        f"| online AUC of the served version on the drifted traffic the retrain learnt from (lake) | "
        f"{_f(auc.get('served_on_drifted'))} | |",
        f"| online AUC of the version retrained on the served log ({r.get('versions', {}).get('after', '?')}) | "
        f"{_f(auc.get('recovered'))} | ≥ the served version's on the drifted traffic + {auc.get('min_gain', '?')} |",
        f"| alert delay: drop visible in the window → GitLab trigger | {_f(alert.get('firing_delay_s'), 1)} s "
        f"| ≤ {TARGETS['firing_delay_s']:.0f} s |",
        f"| drift injected → GitLab trigger | {_f(alert.get('drift_to_trigger_s'), 1)} s | |",
        f"| retrain-to-100 % (trigger → canary at 100 %) | {_f(r.get('retrain_to_100_s'), 1)} s "
        f"| ≤ {r.get('retrain_target_s', TARGETS['retrain_to_100_s']):.0f} s |",
        f"| alert episodes (firing, per version) | {r.get('alert_episodes', {})} | one |",
        f"| retrain triggers | {r.get('triggers', '–')} | 1 |",
        f"| gate (CI's call, the run's trigger.json naming the alert) | {ci_gate} | passed |",
        f"| drift the gate reported and allowed | {allowed} | |",
        f"| overlay changed to the new version | {retrain.get('overlay_changed', '–')} | True |",
        f"| client requests | {client.get('sent', 0)} sent; per phase "
        f"{[(p['phase'], p['sent'], p['failed']) for p in client.get('phases', [])]} (phase, sent, failed) | |",
        f"| failed client requests (non-200) | {client.get('failed', '–')} | 0 |",
        "",
        *_lake_lines(r),
        "| # | stage | time | elapsed (s) | detail |",
        "|---|---|---|---|---|",
    ]
    for i, s in enumerate(r.get("stages", []), 1):
        detail = ", ".join(f"{k}={v}" for k, v in s.items() if k not in ("stage", "at", "unix", "elapsed_s"))
        lines.append(f"| {i} | {s['stage']} | {s['at']} | {s['elapsed_s']:.1f} | {detail} |")
    return "\n".join(lines) + "\n"


def _lake_lines(r: dict[str, Any]) -> list[str]:
    """The served log's part: what the retrain trained on, the models on the same traffic, the lake check."""
    table, same, lake = r.get("training_table"), r.get("same_traffic", {}), r.get("lake_check")
    lines = []
    if table:
        lines += [
            f"Retrained on `forkcast-lake training-table` of the drifted traffic served from {table['since']:.3f} to "
            f"{table['until']:.3f} ({table['until'] - table['since']:.1f} s): {table['rows']} rows (train/test by "
            f"request), click rate {table.get('click_rate')}.",
            "",
        ]
    if same:
        lines += [
            "The same traffic: test metrics on the training table's held-out pairs (served features, real clicks):",
            "",
            "| model | ROC-AUC | accuracy | logloss |",
            "|---|---|---|---|",
            *(
                f"| {name} | {_f(m.get('roc_auc'))} | {_f(m.get('accuracy'))} | {_f(m.get('logloss'))} |"
                for name, m in same.items()
            ),
            "",
        ]
    if lake:
        job, recomputed = lake["job"], lake["lake"]
        lines += [
            f"Lake check ({lake['version']}, predictions in [{lake['since']:.3f}, {lake['until']:.3f})): the job's "
            f"online AUC {job['auc']!r} ({job['samples']} pairs, {job['positives']} clicked, {job['excluded']} "
            f"excluded); recomputed from the lake {recomputed['auc']!r} ({recomputed['samples']}, "
            f"{recomputed['positives']}, {recomputed['excluded']}); |Δ| {lake.get('abs_diff')!r}.",
            "",
        ]
    return lines


def write_report(report: dict[str, Any], base: Path) -> None:
    base.parent.mkdir(parents=True, exist_ok=True)
    base.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    base.with_suffix(".md").write_text(render_markdown(report))
