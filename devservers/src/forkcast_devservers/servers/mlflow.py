"""``mlflow server`` as the platform runs it: one worker, a sqlite store under the data directory, artifacts in S3.

MLflow 3 would also run a job consumer beside each server; job execution is switched off
(``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``), as for every mlflow server the project starts.
"""

from __future__ import annotations

from pathlib import Path

from forkcast_devservers.binaries import MLFLOW, locate
from forkcast_devservers.ready import http_ok
from forkcast_devservers.servers.base import HOST, Server
from forkcast_devservers.servers.seaweed import REGION, Seaweed

SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


class Mlflow(Server):
    """A tracking server + model registry; artifacts go to ``s3://bucket/`` at ``s3_endpoint`` (the bucket must
    exist: ``Seaweed.create_bucket``), or to a local folder when ``s3_endpoint`` is None and ``bucket`` a path."""

    what = "mlflow-server"
    ready_timeout_s = 120.0
    grace_s = 20.0

    def __init__(
        self,
        dir: Path,
        *,
        s3_endpoint: str | None,
        access_key: str = "",
        secret_key: str = "",
        bucket: str = "mlflow-artifacts",
        port: int | None = None,
    ) -> None:
        super().__init__(dir, port=port)
        self.s3_endpoint = s3_endpoint
        self.access_key = access_key
        self.secret_key = secret_key
        self.bucket = bucket

    @classmethod
    def on(
        cls, seaweed: Seaweed, dir: Path, *, bucket: str = "mlflow-artifacts", port: int | None = None
    ) -> Mlflow:
        """A server (not started) whose artifacts go to ``bucket`` on ``seaweed``, which is created if missing: the
        way the platform, the drills and the tests run MLflow."""
        seaweed.create_bucket(bucket)
        return cls(
            dir,
            s3_endpoint=seaweed.endpoint,
            access_key=seaweed.access_key,
            secret_key=seaweed.secret_key,
            bucket=bucket,
            port=port,
        )

    @property
    def url(self) -> str:
        """The tracking URI (``MLFLOW_TRACKING_URI``)."""
        return f"http://{HOST}:{self.port}"

    @property
    def artifacts(self) -> str:
        """Where the server keeps artifacts: ``s3://bucket/`` or a local folder."""
        return f"s3://{self.bucket}/" if self.s3_endpoint is not None else str(Path(self.bucket).resolve())

    def argv(self) -> list[str]:
        store = f"sqlite:///{self.dir / 'mlflow.db'}"
        return [locate(MLFLOW), "server", "--host", HOST, "--port", str(self.port), "--workers", "1",
                "--backend-store-uri", store, "--artifacts-destination", self.artifacts]  # fmt: skip

    def env(self) -> dict[str, str]:
        if self.s3_endpoint is None:
            return dict(SERVER_ENV)
        return {
            **SERVER_ENV,
            "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": REGION,
        }

    def ready(self) -> bool:
        return http_ok(f"{self.url}/health")
