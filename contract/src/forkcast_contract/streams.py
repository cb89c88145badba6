"""Redis stream names and bounds for the platform's event streams (SPEC §6 feedback, online AUC).

Producers (inference: predictions; gateway: feedback) and consumers (monitoring's online AUC) read the names
from here. Both streams are capped with ``XADD … MAXLEN ~ N`` so that a stalled consumer cannot fill Redis.
"""

from __future__ import annotations

from typing import Final

PREDICTIONS_STREAM: Final = "fc:events:predictions"
PREDICTIONS_MAXLEN: Final = 100_000

FEEDBACK_STREAM: Final = "fc:events:feedback"
FEEDBACK_MAXLEN: Final = 100_000
# One marker per (request id, restaurant id) makes feedback idempotent: `<prefix><request id>:<restaurant id>`.
FEEDBACK_DEDUP_PREFIX: Final = "fc:feedback:seen:"
FEEDBACK_DEDUP_TTL_S: Final = 7 * 24 * 3600
