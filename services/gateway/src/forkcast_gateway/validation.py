"""The accept path of the /recommend body check: one msgspec pass, with the pydantic model as the judge of the rest.

Why: pydantic-core's ``model_validate_json`` of a real 1,000-candidate body (≈ 7 KB) took 130 µs and a msgspec
Struct with the same limits 69 µs (timeit over 50 bodies of data/full/requests.parquet, 2-core VM under other
agents' load, 2026-12-05) — the largest single piece of the gateway's own CPU per request after its socket writes.
Re-measured in one run (7 interleaved rounds of 1,000 of those bodies, CPU time, load ≈ 9, 2026-12-05 03:38 UTC):
this Struct 25.8 µs per body, the same Struct without limits 22.7, untyped ``msgspec.json.decode`` 22.4, pydantic
53.1, ``json.loads`` 56.1 — so the check costs 1.15× a bare msgspec parse of the body and is at the parser's floor
(the 69 µs was the load). Of the 22 µs, ≈ 16 µs is making the 1,000 ints (the list left as ``msgspec.Raw``: 6.1 µs);
checking that raw list with bytes passes instead (translate/count, no ints) cost 19 µs in total, so it was not kept.

How the two stay one rule: forkcast_contract.recommend_wire.RecommendBody (the inference decodes with it
too) states the limits of schemas.RecommendRequest (both from
forkcast_contract.api), and a body it accepts is forwarded as is; any body it refuses goes to the pydantic model,
which decides (it also admits integral floats such as ``1.0`` for an integer, routes/recommend.integral_floats) and
writes the documented 422. So msgspec may be stricter than pydantic but never looser: the list's configured length
is checked here (the Struct cannot know the setting), and a number beyond the double range (``1e400``) is refused by
msgspec 0.22 itself ("Number out of range"), as pydantic refuses it (``allow_inf_nan=False``).
tests/unit/test_validation.py holds the two to that: never admitted here when the model refuses (hypothesis).
"""

from __future__ import annotations

import msgspec

from forkcast_contract.recommend_wire import RecommendBody


class FastCheck:
    """``accepts(body)``: True only for a body the pydantic model would accept unchanged."""

    def __init__(self, max_candidates: int) -> None:
        self.max_candidates = max_candidates
        self.decoder = msgspec.json.Decoder(RecommendBody)

    def accepts(self, body: bytes) -> bool:
        try:
            req = self.decoder.decode(body)
        except (
            msgspec.DecodeError
        ):  # ValidationError is a subclass: pydantic says why (and may still admit it)
            return False
        return len(req.candidate_restaurant_ids) <= self.max_candidates
