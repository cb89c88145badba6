"""forkcast inference service: recommendations from Redis features and an S3 model (SPEC §5-7)."""
