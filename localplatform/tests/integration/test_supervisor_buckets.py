"""`forkcast-local up` makes the buckets its render names on every run, not only when it launches weed mini: a weed
started before the render named the lake's bucket (FORKCAST_LAKE_URI) gets it on the next `up`, so lake-compact
does not fail on a missing bucket."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
from botocore.client import Config
from botocore.exceptions import ClientError

from forkcast_devservers.ports import free_port
from forkcast_devservers.servers.seaweed import REGION
from forkcast_local.config import PlatformConfig, load_config
from forkcast_local.supervisor import down, up

LAKE_BUCKET = "forkcast-lake"  # manifests/overlays/local: FORKCAST_LAKE_URI=s3://forkcast-lake


def _config(tmp: Path) -> PlatformConfig:
    toml = tmp / "platform.toml"
    ports = {"seaweed": free_port(), "mlflow": free_port()}
    lines = ["[ports]", *(f'"{k}" = {v}' for k, v in ports.items()), "[settings]"]
    lines += ['mlflow_artifacts_bucket = "mlflow-artifacts"', 'overlay = "local"']
    toml.write_text("\n".join(lines) + "\n")
    return load_config(toml, tmp / "local")


def test_up_creates_a_bucket_missing_on_an_already_running_seaweed(tmp_path: Path) -> None:
    config = _config(tmp_path)
    lines: list[str] = []
    try:
        platform = up(config, log=lines.append, only={"seaweed"})
        assert platform.env["FORKCAST_LAKE_URI"] == f"s3://{LAKE_BUCKET}"
        s3 = boto3.client(
            "s3",
            endpoint_url=platform.url("seaweed"),
            aws_access_key_id=platform.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=platform.env["AWS_SECRET_ACCESS_KEY"],
            region_name=REGION,
            config=Config(s3={"addressing_style": "path"}),
        )
        s3.head_bucket(Bucket=LAKE_BUCKET)  # made at launch
        # A weed launched before the render named the lake's bucket: it is not there.
        s3.delete_bucket(Bucket=LAKE_BUCKET)
        with pytest.raises(ClientError) as gone:
            s3.head_bucket(Bucket=LAKE_BUCKET)
        assert gone.value.response["Error"]["Code"] == "404"

        up(config, log=lines.append, only={"seaweed"})
        assert lines[-1].startswith("seaweed        running"), lines  # kept, not relaunched
        s3.head_bucket(Bucket=LAKE_BUCKET)  # raises ClientError 404 if `up` left it missing
        s3.head_bucket(Bucket=platform.env["FORKCAST_BUCKET"])  # and the existing ones are fine (409 taken)
    finally:
        down(config, log=lines.append, only={"seaweed"})
