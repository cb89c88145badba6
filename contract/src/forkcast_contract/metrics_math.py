"""Exact ROC-AUC, one implementation for the retraining evaluation (offline, on logits) and monitoring's online AUC
(per model version, on served scores and joined clicks). numpy only, like the rest of the contract.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def roc_auc(scores: npt.NDArray[np.floating], positive: npt.NDArray[np.bool_]) -> float:
    """Mann-Whitney U over average ranks (ties count one half), O(n log n): 5 M rows take ~1 s.

    Raises ``ValueError`` unless both classes are present.
    """
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both classes")
    order = np.argsort(scores, kind="stable")
    ranked = scores[order]
    # Average rank of each run of tied scores: 1-based ranks from first+1 to last+1.
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    ends = np.r_[starts[1:], len(ranked)]
    run_rank = (starts + ends + 1) / 2.0
    ranks = np.repeat(run_rank, ends - starts)  # in score order
    u = float(ranks[positive[order]].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)
