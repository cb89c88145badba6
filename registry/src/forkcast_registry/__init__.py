"""forkcast S3 model registry: immutable, checksummed model versions (SPEC §4)."""
