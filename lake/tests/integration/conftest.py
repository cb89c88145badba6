"""The compaction tests' shared S3 place: a fresh bucket on the session's ``weed mini`` with its settings in the env."""

from __future__ import annotations

import uuid

import pytest

from forkcast_devservers.servers import Seaweed


@pytest.fixture
def lake(seaweed: Seaweed, monkeypatch: pytest.MonkeyPatch) -> str:
    """``s3://<fresh bucket>/lake``, the S3 endpoint and credentials set for this process and its children."""
    bucket = f"lake-{uuid.uuid4().hex[:8]}"
    seaweed.create_bucket(bucket)
    for name, value in seaweed.client_env(bucket).items():
        monkeypatch.setenv(name, value)
    return f"s3://{bucket}/lake"
