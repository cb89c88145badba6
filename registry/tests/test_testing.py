"""forkcast_registry.testing: what it adds on top of forkcast_devservers' SeaweedFS, and the transitional names
localplatform still imports, each a view of devservers (same command lines), not a copy."""

from __future__ import annotations

from pathlib import Path

from forkcast_devservers.servers import Mlflow, Seaweed
from forkcast_registry.testing import mlflow_server_argv, s3_client, seaweed_command, start_seaweed


def test_s3_client_reaches_the_server_with_its_credentials(seaweed: Seaweed) -> None:
    seaweed.create_bucket("testing-helpers")
    client = s3_client(seaweed)
    assert "testing-helpers" in {b["Name"] for b in client.list_buckets()["Buckets"]}


def test_the_transitional_command_lines_are_devservers_own(tmp_path: Path) -> None:
    server = Seaweed(tmp_path)
    argv = seaweed_command("/bin/weed", tmp_path / "elsewhere", server.ports)
    assert argv[0] == "/bin/weed" and f"-dir={tmp_path / 'elsewhere'}" in argv
    assert argv[1:] == [
        f"-dir={tmp_path / 'elsewhere'}" if a.startswith("-dir=") else a for a in server.argv()[1:]
    ]
    s3 = mlflow_server_argv(5000, tmp_path, "s3://mlflow-artifacts/")
    assert s3 == Mlflow(tmp_path, s3_endpoint="x", bucket="mlflow-artifacts", port=5000).argv()
    assert mlflow_server_argv(5000, tmp_path, str(tmp_path / "art"), binary="/bin/mlflow")[-1] == str(
        tmp_path / "art"
    )


def test_a_seaweed_started_again_on_its_directory_keeps_its_ports_and_secret(tmp_path: Path) -> None:
    first = start_seaweed(tmp_path / "s3")
    try:
        s3_client(first).create_bucket(Bucket="kept")
    finally:
        first.stop()
    again = start_seaweed(tmp_path / "s3", ports=first.ports)
    try:
        assert (again.endpoint, again.secret_key) == (first.endpoint, first.secret_key)
        assert "kept" in {b["Name"] for b in s3_client(again).list_buckets()["Buckets"]}
    finally:
        again.stop()
