"""The online AUC of one model version over a time window, recomputed from the served-log tables.

Same pairs as the streaming job (forkcast_monitoring.online_auc), by construction rather than by a second
implementation: the join rule is :mod:`forkcast_lake.pit_labels` (constants from forkcast_contract.streams), the
per-key share rule and the AUC are the job's own functions, imported (``forkcast_monitoring.window.key_cap`` and
``rank_from_newest``: what ``Window.kept`` applies; ``forkcast_contract.metrics_math.roc_auc``: what
``Window.estimate`` computes). The job's window holds the pairs whose prediction is at or after ``now - window_s``;
``since`` is that horizon and ``until`` the end of the traffic the job had read, so with the job's
``FORKCAST_AUC_MAX_KEY_SHARE`` the two figures agree to rounding (the end-to-end drill checks 1e-9).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

from forkcast_contract.metrics_math import roc_auc
from forkcast_contract.streams import ATTRIBUTION_WINDOW_S
from forkcast_lake.pit_labels import labelled_pairs
from forkcast_lake.pit_source import ServedLog, parse_time
from forkcast_lake.settings import get_settings
from forkcast_monitoring.settings import MonitoringSettings
from forkcast_monitoring.window import key_cap, rank_from_newest


@dataclass(frozen=True)
class LakeAuc:
    """The figure and the counts the job exports for the same window (``Estimate``'s fields)."""

    model_version: str
    since: float
    until: float
    samples: int  # pairs the AUC is computed on (labelled, in the window, within the per-key share)
    positives: int
    excluded: int  # labelled pairs left out because their key held more than its share
    auc: float | None  # None: fewer than min_samples pairs, or fewer than min_per_class of a class


def auc_of_pairs(
    pairs: pl.DataFrame, max_key_share: float, min_samples: int = 1, min_per_class: int = 1
) -> tuple[int, int, int, float | None]:
    """(samples, positives, excluded, auc) of labelled pairs (columns ``ts``, ``score``, ``clicked``, ``key_id``).

    The kept pairs are those ``Window.kept`` keeps: each key at most ``key_cap`` pairs, its newest by (prediction
    time, score, label).
    """
    times = pairs["ts"].to_numpy().astype(np.float64)
    scores = pairs["score"].to_numpy().astype(np.float64)
    labels = pairs["clicked"].to_numpy().astype(np.bool_)
    keys = (
        (pairs["key_id"].rank("dense").to_numpy().astype(np.int32) - 1)
        if pairs.height
        else np.zeros(0, np.int32)
    )
    cap = key_cap(np.bincount(keys), max_key_share) if len(keys) else None
    excluded = 0
    if cap is not None:
        keep = rank_from_newest(keys, times, scores, labels) < cap
        excluded = len(keep) - int(keep.sum())
        scores, labels = scores[keep], labels[keep]
    samples, positives = len(scores), int(labels.sum())
    if samples < min_samples or min(positives, samples - positives) < max(min_per_class, 1):
        return samples, positives, excluded, None
    return samples, positives, excluded, roc_auc(scores, labels)


def lake_online_auc(
    log: ServedLog,
    model_version: str,
    since: float,
    until: float,
    *,
    max_key_share: float,
    attribution_s: float = ATTRIBUTION_WINDOW_S,
    min_samples: int = 1,
    min_per_class: int = 1,
) -> LakeAuc:
    """The AUC of ``model_version``'s labelled pairs whose prediction is stamped in [since, until)."""
    predictions = log.predictions(since, until).filter(pl.col("model_version") == model_version)
    feedback = log.feedback(since, until, attribution_s)
    pairs = (
        labelled_pairs(predictions, feedback, attribution_s)
        .filter(pl.col("clicked").is_not_null())
        .select("ts", "score", "clicked", "key_id")
        .collect()
    )
    samples, positives, excluded, auc = auc_of_pairs(pairs, max_key_share, min_samples, min_per_class)
    return LakeAuc(model_version, since, until, samples, positives, excluded, auc)


def _run(args: argparse.Namespace) -> int:
    result = lake_online_auc(
        ServedLog(args.lake or get_settings().lake_uri),
        args.model_version,
        args.since,
        args.until,
        max_key_share=args.max_key_share,
        attribution_s=args.attribution_s,
        min_samples=args.min_samples,
        min_per_class=args.min_per_class,
    )
    print(json.dumps(asdict(result)))
    return 0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``forkcast-lake online-auc``: prints the recomputed figure as one JSON object."""
    # The online-AUC job's defaults, read from its settings class (not instantiated: that would demand the job's
    # production settings here). A job configured otherwise (FORKCAST_AUC_MAX_KEY_SHARE …) is matched by the flags.
    job = {name: f.default for name, f in MonitoringSettings.model_fields.items()}
    parser = subparsers.add_parser(
        "online-auc",
        help="recompute a model version's online AUC over a window from the served-log tables",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("--lake", default=None, help="lake prefix (default: FORKCAST_LAKE_URI)")
    parser.add_argument("--model-version", required=True, help="the model version whose pairs count")
    parser.add_argument(
        "--since",
        type=parse_time,
        required=True,
        help="first prediction time counted (Unix seconds or ISO-8601)",
    )
    parser.add_argument(
        "--until", type=parse_time, required=True, help="predictions before this time count (exclusive)"
    )
    parser.add_argument(
        "--max-key-share",
        type=float,
        default=job["auc_max_key_share"],
        help="most of the pairs one API key may hold: the job's FORKCAST_AUC_MAX_KEY_SHARE (default %(default)s)",
    )
    parser.add_argument(
        "--attribution-s",
        type=float,
        default=job["auc_attribution_s"],
        help="latest click joined, after prediction",
    )
    parser.add_argument(
        "--min-samples",
        type=int,
        default=1,
        help="no AUC below this many pairs (the job: FORKCAST_AUC_MIN_SAMPLES)",
    )
    parser.add_argument(
        "--min-per-class", type=int, default=1, help="no AUC below this many pairs of a class"
    )
    parser.set_defaults(run=_run)
