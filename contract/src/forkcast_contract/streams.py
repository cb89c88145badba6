"""Redis stream names, bounds and record layouts of the platform's event streams (SPEC §6 feedback, online AUC).

Producers (inference: predictions; gateway: feedback) and consumers (monitoring's online AUC) read the names and
field layouts from here. Both streams are capped with ``XADD … MAXLEN ~ N`` so that a stalled consumer cannot fill
Redis. They live in the events Redis (``FORKCAST_EVENTS_REDIS_URL``, which defaults to ``REDIS_URL``), apart from
the online features, so that a flood of events cannot evict or OOM the features a recommendation needs.
"""

from __future__ import annotations

from typing import Final

PREDICTIONS_STREAM: Final = "fc:events:predictions"
PREDICTIONS_MAXLEN: Final = 100_000

FEEDBACK_STREAM: Final = "fc:events:feedback"
# Ten times the predictions' cap: a request brings about ten feedback events, so at 30 req/s (300 feedback/s)
# 1,000,000 entries last ~55 minutes, as the predictions' 100,000 do; at 100,000 they lasted ~5.5 minutes, less
# than an outage of the lake's compaction takes to page (LakeCommitStale, ~4 minutes) and be acted on, and what the
# cap deletes unread never reaches the lake. Memory: 98 B per entry (manifests/base/redis/events.conf) = 98 MB.
FEEDBACK_MAXLEN: Final = 1_000_000

# The online-AUC join: a click counts for a prediction when it comes at most ATTRIBUTION_WINDOW_S after it, and
# an event stamped up to MAX_CLOCK_SKEW_S in the future is still taken (producers' clocks differ). Monitoring's
# defaults and the dedup markers' lifetime below both come from these two numbers, so they cannot drift apart.
ATTRIBUTION_WINDOW_S: Final = 600
MAX_CLOCK_SKEW_S: Final = 30

# One marker per (request id, restaurant id) makes feedback idempotent: `<prefix><request id>:<restaurant id>`.
# It only has to outlive the time in which the join could still count the pair: after ATTRIBUTION_WINDOW_S (+ skew)
# from the prediction a repeat is "late" for the join anyway. Before issue 18 the markers lived 7 days: at one key's
# 2,000 feedback/s that was ≈ 1 GB of markers an hour, kept for a week.
FEEDBACK_DEDUP_PREFIX: Final = "fc:feedback:seen:"
FEEDBACK_DEDUP_TTL_S: Final = ATTRIBUTION_WINDOW_S + MAX_CLOCK_SKEW_S

# The key id a prediction event carries when the inference service was called directly, not through the gateway
# (no API key behind it). Key ids in the gateway's key file are 1-64 of [A-Za-z0-9_.-], so a real key can be "-"
# only if an operator names it so; the gateway's keygen refuses that name.
NO_KEY_ID: Final = "-"

# Field names of a prediction event (inference → PREDICTIONS_STREAM), in the order they are written.
# rid: the request id the gateway minted; ts: Unix seconds; user: user id; model / fv: model and feature versions;
# ids / scores: JSON arrays of the served restaurants and their scores; key_id: the caller's API key id (NO_KEY_ID
# for a direct call). Records written before key_id existed lack it: a reader takes it as NO_KEY_ID.
PREDICTION_FIELDS: Final = ("rid", "ts", "user", "model", "fv", "ids", "scores", "key_id")

# Field names of a feedback event (gateway → FEEDBACK_STREAM), in the order the gateway's XADD writes them.
# key_id: the API key id that sent the feedback (the gateway only accepts feedback on its own request ids).
FEEDBACK_FIELDS: Final = ("rid", "restaurant", "clicked", "ts", "key_id")

# Live feature updates (issue 16.3): one record per single-entity update, written AFTER the feature write succeeded
# by the gateway's admin route (forkcast_gateway.feature_updates) and by `forkcast-features update-user|
# update-restaurant` (forkcast_features.updates), so that the lake can tell which values a prediction was served
# with (the version's values plus every update logged before it). Capped like the others.
FEATURE_UPDATES_STREAM: Final = "fc:events:feature-updates"
FEATURE_UPDATES_MAXLEN: Final = 100_000

# Field names of a feature-update event, in the order the producers write them. entity: "user" or "restaurant";
# id: the entity id; fv: the feature version written to; features: JSON array of the values as stored (float32,
# written back as the shortest float that reads as that float32); latitude / longitude: the restaurant's new
# coordinates in degrees ("" for a user); ts: Unix seconds after the write; actor: who asked — the API key id for
# the gateway's admin route, "cli:<os user>" for the feature-store CLI.
FEATURE_UPDATE_FIELDS: Final = ("entity", "id", "fv", "features", "latitude", "longitude", "ts", "actor")
