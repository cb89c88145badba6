"""forkcast retraining pipeline: prep, train, evaluate (and, later, gate, publish, promote)."""
