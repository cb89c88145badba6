"""forkcast_registry.testing: what it adds on top of forkcast_devservers' SeaweedFS (a boto3 client of it)."""

from __future__ import annotations

from forkcast_devservers.servers import Seaweed
from forkcast_registry.testing import s3_client


def test_s3_client_reaches_the_server_with_its_credentials(seaweed: Seaweed) -> None:
    seaweed.create_bucket("testing-helpers")
    client = s3_client(seaweed)
    assert "testing-helpers" in {b["Name"] for b in client.list_buckets()["Buckets"]}
