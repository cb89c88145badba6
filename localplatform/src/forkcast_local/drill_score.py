"""Several trained models scored on one run's held-out rows: the end-to-end drill's "same traffic" comparison.

``python -m forkcast_local.drill_score RUN MODEL_DIR…`` prints one JSON object, model directory → test metrics
(``roc_auc``, ``accuracy``, ``logloss``), each model scored by the gate's own function
(``forkcast_retrain.gate.score``: the model's ``model.pt`` and ``scaler.npz`` on RUN's prepared test files). The
drill's RUN is the retraining run on the training table of the served log, so every model is scored on the same
served (request, restaurant) pairs, with the features they were served with and the clicks they got. A child
process, because torch costs the drill's process seconds and hundreds of MiB it otherwise never needs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from forkcast_retrain.gate import score
from forkcast_retrain.prep import load_prepared


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m forkcast_local.drill_score", description=__doc__)
    parser.add_argument(
        "run", type=Path, help="a run directory with a complete prep/ (its test files are scored)"
    )
    parser.add_argument(
        "models", type=Path, nargs="+", help="run directories holding model.pt and scaler.npz"
    )
    args = parser.parse_args(argv)
    prepared = load_prepared(args.run)
    print(json.dumps({str(m): score(m, prepared) for m in args.models}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
