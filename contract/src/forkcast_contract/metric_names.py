"""Prometheus metric names, defined once: services register them, rules and dashboards are checked against them.

Only the gateway's names live here so far (issue 8); the inference service's follow with the monitoring issue.
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

# Online AUC (issue 10 defines the names the canary analysis reads; the monitoring issue's online-AUC job exports
# them): gauges over the job's sliding window, label model_version (predictions joined with click feedback).
# The Rollout's AnalysisTemplate compares canary and stable by joining them with the inference service's
# forkcast_inference_served_info{model_version} per pod, and needs ONLINE_AUC_SAMPLES labelled predictions first.
ONLINE_AUC: Final = "forkcast_online_auc"
ONLINE_AUC_SAMPLES: Final = "forkcast_online_auc_samples"
