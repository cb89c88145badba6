"""forkcast API gateway: the public edge of SPEC §6."""
