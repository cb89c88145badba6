"""Prometheus metric names, defined once: services register them, rules and dashboards are checked against them.

Every service registers its metrics under these names; monitoring's rules and the Argo AnalysisTemplates query
them, and monitoring/tests check that every name a rule uses is defined here, so the three cannot drift apart.
"""

from __future__ import annotations

from typing import Final

# RED per route and status class: labels route (the route template), method, status_class (2xx, 4xx, …).
GATEWAY_REQUESTS_TOTAL: Final = "forkcast_gateway_requests_total"
GATEWAY_REQUEST_DURATION_SECONDS: Final = "forkcast_gateway_request_duration_seconds"
# Forwarding: label upstream (the group name: stable, canary, …) and outcome (ok, connect_error, timeout, …).
GATEWAY_UPSTREAM_DURATION_SECONDS: Final = "forkcast_gateway_upstream_duration_seconds"
GATEWAY_UPSTREAM_ERRORS_TOTAL: Final = "forkcast_gateway_upstream_errors_total"
GATEWAY_UPSTREAM_RETRIES_TOTAL: Final = "forkcast_gateway_upstream_retries_total"
GATEWAY_IN_FLIGHT: Final = "forkcast_gateway_in_flight_requests"
GATEWAY_OVERLOADED_TOTAL: Final = "forkcast_gateway_overloaded_total"
GATEWAY_RATE_LIMITED_TOTAL: Final = "forkcast_gateway_rate_limited_total"
GATEWAY_RATE_LIMIT_ERRORS_TOTAL: Final = "forkcast_gateway_rate_limit_errors_total"
GATEWAY_CIRCUIT_OPEN_TOTAL: Final = "forkcast_gateway_circuit_open_total"
GATEWAY_CIRCUIT_STATE: Final = "forkcast_gateway_circuit_state"
GATEWAY_AUTH_FAILURES_TOTAL: Final = "forkcast_gateway_auth_failures_total"
GATEWAY_FEEDBACK_TOTAL: Final = "forkcast_gateway_feedback_total"

# Inference service: histograms in seconds; labels status (2xx/4xx/5xx), stage, kind, cause. SERVED is an Info
# (exposed as ``forkcast_inference_served_info``) with labels model_version, feature_version and provenance.
INFERENCE_REQUEST_SECONDS: Final = "forkcast_inference_request_seconds"
INFERENCE_STAGE_SECONDS: Final = "forkcast_inference_stage_seconds"
INFERENCE_CANDIDATES: Final = "forkcast_inference_candidates"
INFERENCE_ERRORS: Final = "forkcast_inference_errors"
INFERENCE_EVENTS_DROPPED: Final = "forkcast_inference_events_dropped"
INFERENCE_EVENTS_WRITTEN: Final = "forkcast_inference_events_written"
INFERENCE_READY: Final = "forkcast_inference_ready"
INFERENCE_SERVED: Final = "forkcast_inference_served"
# Unix time the served model version was published (its id starts with that UTC time): the max-age alert's input.
INFERENCE_MODEL_PUBLISHED_TIME: Final = "forkcast_inference_model_published_timestamp_seconds"
# Test-set ROC-AUC of the served version at training (its manifest's metrics.roc_auc), label model_version: the
# level the online AUC of that version is held to (the AUC-floor alert fires 0.05 below it).
INFERENCE_MODEL_OFFLINE_AUC: Final = "forkcast_inference_model_offline_auc"

# Online AUC (issue 10 defines the names the canary analysis reads; the monitoring issue's online-AUC job exports
# them): gauges over the job's sliding window, label model_version (predictions joined with click feedback).
# The Rollout's AnalysisTemplate compares canary and stable by joining them with the inference service's
# forkcast_inference_served_info{model_version} per pod, and needs ONLINE_AUC_SAMPLES labelled predictions first.
ONLINE_AUC: Final = "forkcast_online_auc"
ONLINE_AUC_SAMPLES: Final = "forkcast_online_auc_samples"
# The interval is Hanley-McNeil's normal approximation (95 %); absent, like ONLINE_AUC, below the minimum count.
ONLINE_AUC_LOWER: Final = "forkcast_online_auc_lower"
ONLINE_AUC_UPPER: Final = "forkcast_online_auc_upper"
ONLINE_AUC_POSITIVES: Final = "forkcast_online_auc_positives"
# The same estimate over the last ONLINE_AUC_RECENT_WINDOW_S seconds only (label model_version; absent below the
# minimum count): the canary analysis compares canary and stable on it, so both AUCs cover the same minutes
# (over the hour-long ONLINE_AUC window stable's would cover an hour and a new canary's only its first minutes).
ONLINE_AUC_RECENT: Final = "forkcast_online_auc_recent"
ONLINE_AUC_RECENT_SAMPLES: Final = "forkcast_online_auc_recent_samples"
# The lowest and highest ONLINE_AUC_RECENT with one API key's pairs left out, over every key in the recent window
# (label model_version; absent when ONLINE_AUC_RECENT is, when one key only is present, and when leaving out some
# key leaves the rest below the minimum counts): one key moves at most one end, so the canary analysis, which decides
# only when both ends agree, can be paused by one key but never decided by it (issue 18.1; window.leave_one_key_out).
ONLINE_AUC_RECENT_LOKO_MIN: Final = "forkcast_online_auc_recent_loko_min"
ONLINE_AUC_RECENT_LOKO_MAX: Final = "forkcast_online_auc_recent_loko_max"
# 5 minutes: the Rollout pauses 5 minutes at its first canary step before the online-AUC analysis, so by the first
# measurement the canary has served for the whole window (rollouts/inference-rollout.yaml).
ONLINE_AUC_RECENT_WINDOW_S: Final = 300.0
# Events the job read, label stream (predictions/feedback) and outcome (joined, late, unjoined, malformed, …).
ONLINE_AUC_EVENTS_TOTAL: Final = "forkcast_online_auc_events_total"
# Unix time of the newest event the job has read: the "no predictions" alert watches its age.
ONLINE_AUC_LAST_EVENT_TIME: Final = "forkcast_online_auc_last_event_timestamp_seconds"
# Pairs in a window that its estimate leaves out, labels model_version, window (long: ONLINE_AUC; recent:
# ONLINE_AUC_RECENT) and reason (key_share: the pair's API key held more than FORKCAST_AUC_MAX_KEY_SHARE of the
# window). Never labelled by key id: key ids are unbounded label values and would name the client.
ONLINE_AUC_EXCLUDED_PAIRS: Final = "forkcast_online_auc_excluded_pairs"
# Joined pairs dropped for good, label reason (capacity: a full window shed the oldest pairs of its largest keys).
ONLINE_AUC_DROPPED_PAIRS_TOTAL: Final = "forkcast_online_auc_dropped_pairs_total"

# Drift job (monitoring): served features and scores against the training profile of the version in service,
# label model_version (and feature, a model input name such as ``user.f03``, for the feature PSI).
DRIFT_FEATURE_PSI: Final = "forkcast_drift_feature_psi"
DRIFT_SCORE_PSI: Final = "forkcast_drift_score_psi"
# Prediction events in the last sample, per model version; and Unix time of the last completed measurement.
DRIFT_SAMPLE_EVENTS: Final = "forkcast_drift_sample_events"
DRIFT_LAST_RUN_TIME: Final = "forkcast_drift_last_run_timestamp_seconds"

# Served-log compaction (lake, `forkcast-lake compact`): rows committed per table (label table), the seconds of
# each Delta commit (label table), entries trimmed from each stream (label stream), entries that did not decode
# (label stream), entries read but not yet committed (label stream: the open batch), and how far each stream is
# behind the lake: the age in seconds of its oldest entry not yet committed (0 when caught up; label stream), which
# the LakeCompactionLagging alert reads. The Unix time each stream was last known committed up to its head (its last
# commit, or the last check that found nothing left to commit; LakeCommitStale and LakeCommitTimeAbsent read it),
# and the entries the producers' MAXLEN cap deleted before the job read them (label stream; LakeEntriesLost).
LAKE_ROWS_COMMITTED_TOTAL: Final = "forkcast_lake_rows_committed_total"
LAKE_COMMIT_SECONDS: Final = "forkcast_lake_commit_seconds"
LAKE_TRIMMED_TOTAL: Final = "forkcast_lake_trimmed_total"
LAKE_MALFORMED_TOTAL: Final = "forkcast_lake_malformed_total"
LAKE_BUFFERED_ENTRIES: Final = "forkcast_lake_buffered_entries"
LAKE_LAG_SECONDS: Final = "forkcast_lake_lag_seconds"
LAKE_LAST_COMMIT_TIMESTAMP: Final = "forkcast_lake_last_commit_timestamp_seconds"
LAKE_LOST_ENTRIES_TOTAL: Final = "forkcast_lake_lost_entries_total"

# Alert receiver (monitoring): retraining triggers sent to GitLab, label outcome (sent, cooldown, failed, …).
RETRAIN_TRIGGERS_TOTAL: Final = "forkcast_retrain_triggers_total"
# The alerts (PrometheusRule names) that the AlertmanagerConfig routes to the alert receiver: the only values of the
# retrain pipeline's ``alert_name`` input. The receiver refuses any other;
# monitoring/tests/integration/test_receiver.py checks this tuple against the rendered manifests, and the CI's
# ``spec:inputs`` options list the same names.
RETRAIN_ALERTS: Final = ("FeatureDriftHigh", "OnlineAucLow")

# The program (console script) that exports each name, by prefix: the manifests check (forkcast-manifests) follows
# every name a rule, analysis or dashboard reads to the workload running that program and the monitor scraping it.
PRODUCER_PREFIXES: Final = {
    "forkcast_gateway_": "forkcast-gateway",
    "forkcast_inference_": "forkcast-inference",
    "forkcast_online_auc": "forkcast-online-auc",
    "forkcast_drift_": "forkcast-drift",
    "forkcast_retrain_triggers": "forkcast-alert-receiver",
    "forkcast_lake_": "forkcast-lake",
}


def names() -> dict[str, str]:
    """Every metric name defined here, by constant name."""
    return {
        k: v for k, v in globals().items() if k.isupper() and isinstance(v, str) and v.startswith("forkcast_")
    }


def producer(name: str) -> str | None:
    """The console script that exports ``name`` (None: no forkcast program does)."""
    found = [program for prefix, program in PRODUCER_PREFIXES.items() if name.startswith(prefix)]
    return found[0] if len(found) == 1 else None
