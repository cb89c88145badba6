"""Limits of the public recommendation API (SPEC §6), shared by the gateway's pydantic schema and the inference
service's msgspec schema so that both accept exactly the same requests.

The gateway validates first and forwards only what passed; if the two disagreed, a request the gateway accepted
could be refused upstream (a confusing 422 from behind the edge) or the reverse.
"""

from __future__ import annotations

from typing import Final

INT64_MAX: Final = 2**63 - 1

# `u` followed by digits, or bare digits; at most 18 digits so the id always fits in an int64.
USER_ID_DIGITS_MAX: Final = 18
USER_ID_PATTERN: Final = rf"^u?[0-9]{{1,{USER_ID_DIGITS_MAX}}}$"

MAX_CANDIDATES_DEFAULT: Final = 2000
CANDIDATE_ID_MIN: Final = 0
CANDIDATE_ID_MAX: Final = INT64_MAX

LATITUDE_MIN: Final = -90.0
LATITUDE_MAX: Final = 90.0
LONGITUDE_MIN: Final = -180.0
LONGITUDE_MAX: Final = 180.0

SIZE_DEFAULT: Final = 20
SIZE_MIN: Final = 1
SIZE_MAX: Final = INT64_MAX

MAX_DIST_DEFAULT_M: Final = 5000.0
MAX_DIST_MIN_M: Final = 0.0

MAX_BODY_BYTES_DEFAULT: Final = 1 << 20

# Response headers every recommendation carries (lower case, as ASGI servers send them).
HEADER_MODEL_VERSION: Final = "x-model-version"
HEADER_FEATURE_VERSION: Final = "x-feature-version"
HEADER_REQUEST_ID: Final = "x-request-id"
# A caller's own X-Request-ID is never used as the request id (issue 18.1: callers chose the ids their feedback
# then labelled); it is echoed back as X-Correlation-ID when it has this shape, and dropped otherwise.
HEADER_CORRELATION_ID: Final = "x-correlation-id"
CORRELATION_ID_PATTERN: Final = r"^[A-Za-z0-9._:\-]{1,64}$"
# The gateway → inference header naming the caller's API key id (the gateway drops any client-sent copy).
HEADER_KEY_ID: Final = "x-forkcast-key-id"
KEY_ID_PATTERN: Final = r"^[A-Za-z0-9_.\-]{1,64}$"

# Request ids are minted by the gateway: 128 random bits and a 128-bit HMAC tag binding them to the caller's key id,
# each base64url without padding (22 characters), joined by a dot. The inference service, which holds no MAC key,
# checks only this shape: a direct call without such an id gets an id of its own that never verifies.
REQUEST_ID_PATTERN: Final = r"^[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{22}$"
# What /feedback's schema accepts as a request id (printable ASCII up to this length); the gateway then refuses
# with 403 any that it did not mint for the caller's key (malformed, forged, or another key's).
REQUEST_ID_MAX_LEN: Final = 64
