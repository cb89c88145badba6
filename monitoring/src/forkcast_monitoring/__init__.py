"""forkcast monitoring: online AUC from real feedback, the retraining alert receiver and the feedback simulator."""
