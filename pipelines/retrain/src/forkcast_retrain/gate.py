"""gate: may this run replace the champion? Same held-out rows for both, fixed thresholds, a written report.

Passes only if the challenger's ROC-AUC and accuracy are above absolute floors, its ROC-AUC is not below the
champion's, nor below the best of the last N champions', by more than epsilon (all scored on the same held-out
rows), its logloss is not worse beyond a margin, its probe-set scores are finite and not degenerate, and the new
training data has not drifted from the champion's beyond a PSI threshold. Drift is reported but does not fail the
gate when allowed explicitly (``--allow-drift``) or when an alert asked for this retraining (``trigger.json`` of the
run names it): a retrain *because* the online AUC fell or the features moved trains on data that drifted from the
champion's by definition, and failing it would leave the degraded model serving. The AUC checks still apply.
Writes ``gate_report.json`` and ``gate_report.md`` into the run directory (publish carries them into the version)
and exits non-zero on failure, which is what stops the CI pipeline. Both name the dataset snapshot the challenger
was trained on (``dataset``: URI, lake version, fingerprint), so a reviewer sees which data the decision is about.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from forkcast_contract.dataset import read_manifest
from forkcast_contract.model_format import MODEL_FILE, SCALER_FILE
from forkcast_contract.registry_format import (
    DATA_PROFILE_FILE,
    GATE_REPORT_FILE,
    GATE_REPORT_MD_FILE,
    DatasetSnapshot,
)
from forkcast_retrain.drift import psi
from forkcast_retrain.evaluate import score_metrics
from forkcast_retrain.gate_policy import GateThresholds
from forkcast_retrain.prep import Prepared, load_prepared
from forkcast_retrain.serving_form import load_scaler, load_torchscript, probe_inputs, torchscript_scores
from forkcast_retrain.snapshot import describe, snapshot_of
from forkcast_retrain.stream import FeatureGatherer


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class GateReport:
    passed: bool
    challenger: dict[str, float]
    champion: dict[str, float] | None
    champion_version: str | None
    thresholds: dict[str, Any]
    checks: list[Check] = field(default_factory=list)
    drift: dict[str, Any] = field(default_factory=dict)
    # ROC-AUC on this run's held-out rows of each earlier champion the bound was measured against (version → AUC).
    recent_champions: dict[str, float] = field(default_factory=dict)
    # The snapshot the challenger trained on (forkcast_contract DatasetSnapshot as a dict: uri, version, ...).
    dataset: dict[str, Any] = field(default_factory=dict)


def score(model_dir: Path, prepared: Prepared) -> dict[str, float]:
    """Test metrics of model_dir's model.pt + scaler.npz on the run's held-out files."""
    model = load_torchscript(model_dir / MODEL_FILE)
    mean, std = load_scaler(model_dir / SCALER_FILE)
    gatherer = FeatureGatherer(prepared, mean, std)
    logits, labels = [], []
    with torch.no_grad():
        for path in prepared.click_files("test"):
            x, y = gatherer.load(path)
            logits.append(model(x).numpy())
            labels.append(y.numpy())
    return score_metrics(np.concatenate(logits), np.concatenate(labels))


def _performance_checks(
    ch: dict[str, float],
    champ: dict[str, float] | None,
    t: GateThresholds,
    recent: dict[str, float] | None = None,
) -> list[Check]:
    """Absolute floors, then the challenger against the current champion and the best of the recent ones.

    ``recent`` maps earlier champions' versions to their ROC-AUC on the same held-out rows.
    """
    auc, acc = ch["roc_auc"], ch["accuracy"]
    checks = [
        Check("auc_floor", bool(auc >= t.auc_floor), f"roc_auc {auc:.4f} ≥ floor {t.auc_floor}"),
        Check(
            "accuracy_floor", bool(acc >= t.accuracy_floor), f"accuracy {acc:.4f} ≥ floor {t.accuracy_floor}"
        ),
    ]
    if recent:
        best, best_auc = max(recent.items(), key=lambda kv: kv[1])
        need = best_auc - t.auc_epsilon
        checks.append(
            Check(
                "auc_vs_recent_champions",
                bool(auc >= need),
                f"roc_auc {auc:.4f} ≥ best of the last {len(recent)} champions ({best}) − ε = {need:.4f}",
            )
        )
    if champ is None:
        checks.append(Check("vs_champion", True, "no champion yet: only absolute checks apply"))
        return checks
    need = champ["roc_auc"] - t.auc_epsilon
    checks.append(
        Check("auc_vs_champion", bool(auc >= need), f"roc_auc {auc:.4f} ≥ champion − ε = {need:.4f}")
    )
    limit = champ["logloss"] + t.logloss_margin
    ll = ch["logloss"]
    checks.append(
        Check("logloss_vs_champion", bool(ll <= limit), f"logloss {ll:.4f} ≤ champion + margin = {limit:.4f}")
    )
    return checks


def _probe_check(run_dir: Path, prepared: Prepared, t: GateThresholds) -> Check:
    model = load_torchscript(run_dir / MODEL_FILE)
    mean, std = load_scaler(run_dir / SCALER_FILE)
    scores = torchscript_scores(model, mean, std, probe_inputs(prepared))
    if not np.isfinite(scores).all():
        return Check(
            "probe", False, f"{int((~np.isfinite(scores)).sum())} of {len(scores)} probe scores not finite"
        )
    spread = float(scores.std())
    return Check(
        "probe", spread >= t.probe_min_std, f"probe logit std {spread:.4g} ≥ {t.probe_min_std} (finite)"
    )


def _drift_checks(
    prepared: Prepared, champion_dir: Path | None, t: GateThresholds
) -> tuple[list[Check], dict[str, Any]]:
    if champion_dir is None or not (champion_dir / DATA_PROFILE_FILE).is_file():
        return [Check("drift", True, "no champion data profile: drift not measured")], {}
    reference = json.loads((champion_dir / DATA_PROFILE_FILE).read_text())
    per_feature = psi(reference, prepared)
    worst = max(per_feature, key=lambda k: per_feature[k])
    rate = read_manifest(Path(prepared.info["data_dir"])).click_rate.get("train", float("nan"))
    shift = abs(rate - float(reference["label_rate"]))
    drifted = per_feature[worst] > t.psi_max or not shift <= t.label_rate_shift_max
    suffix = f" (allowed: {t.allow_drift_reason})" if drifted and t.allow_drift else ""
    checks = [
        Check(
            "drift_psi",
            per_feature[worst] <= t.psi_max or t.allow_drift,
            f"max PSI {per_feature[worst]:.3f} ({worst}), limit {t.psi_max}{suffix}",
        ),
        Check(
            "drift_label_rate",
            bool(shift <= t.label_rate_shift_max) or t.allow_drift,
            f"click rate {rate:.4f} vs {reference['label_rate']:.4f}: |Δ| {shift:.4f} ≤ {t.label_rate_shift_max}",
        ),
    ]
    return checks, {
        "psi": per_feature,
        "max_psi_feature": worst,
        "label_rate": rate,
        "label_rate_shift": shift,
    }


def run_gate(
    run_dir: Path,
    champion_dir: Path | None,
    champion_version: str | None,
    t: GateThresholds,
    earlier_champions: dict[str, Path] | None = None,
) -> GateReport:
    """Evaluate ``run_dir`` against the champion in ``champion_dir`` (a verified registry copy), or alone.

    ``earlier_champions`` (version → verified registry copy) are the champions before the current one, newest
    first, at most ``t.recent_champions`` with it; each is scored on the same held-out rows.
    """
    prepared = load_prepared(run_dir)
    challenger = score(run_dir, prepared)
    champion = score(champion_dir, prepared) if champion_dir is not None else None
    recent = {v: score(d, prepared)["roc_auc"] for v, d in (earlier_champions or {}).items()}
    if champion is not None and champion_version is not None:
        recent = {champion_version: champion["roc_auc"], **recent}
    checks = _performance_checks(challenger, champion, t, recent)
    checks.append(_probe_check(run_dir, prepared, t))
    drift_checks, drift = _drift_checks(prepared, champion_dir, t)
    checks += drift_checks
    report = GateReport(
        all(c.passed for c in checks),
        challenger,
        champion,
        champion_version,
        asdict(t),
        checks,
        drift,
        recent,
        snapshot_of(prepared.info).model_dump(),
    )
    (run_dir / GATE_REPORT_FILE).write_text(json.dumps(asdict(report), indent=2))
    (run_dir / GATE_REPORT_MD_FILE).write_text(render_markdown(report))
    return report


def render_markdown(r: GateReport) -> str:
    lines = [
        f"# Gate report: {'PASSED' if r.passed else 'FAILED'}",
        "",
        f"Champion: {r.champion_version or 'none'}",
        "",
        f"Challenger trained on: {describe(DatasetSnapshot.model_validate(r.dataset)) if r.dataset else 'unknown'}",
        "",
        "| metric | challenger | champion |",
        "|---|---|---|",
    ]
    for k in ("roc_auc", "logloss", "accuracy", "calibration_error"):
        champ = f"{r.champion[k]:.4f}" if r.champion else "–"
        lines.append(f"| {k} | {r.challenger[k]:.4f} | {champ} |")
    if r.recent_champions:
        lines += ["", "Champions the bound is measured against (ROC-AUC on these rows): " + ", ".join(
            f"{v} {auc:.4f}" for v, auc in r.recent_champions.items())]  # fmt: skip
    lines += ["", "| check | result | detail |", "|---|---|---|"]
    lines += [f"| {c.name} | {'pass' if c.passed else 'FAIL'} | {c.detail} |" for c in r.checks]
    if r.drift:
        top = sorted(r.drift["psi"].items(), key=lambda kv: -kv[1])[:5]
        lines += ["", "Largest PSI: " + ", ".join(f"{k} {v:.3f}" for k, v in top)]
    return "\n".join(lines) + "\n"


def gate_values(r: GateReport) -> dict[str, float]:
    """Numbers to log to MLflow next to the decision."""
    values = {f"challenger_{k}": v for k, v in r.challenger.items()}
    values.update({f"champion_{k}": v for k, v in (r.champion or {}).items()})
    if r.drift:
        values["max_psi"] = float(max(r.drift["psi"].values()))
        values["label_rate_shift"] = float(r.drift["label_rate_shift"])
    values["passed"] = 1.0 if r.passed else 0.0
    return values
