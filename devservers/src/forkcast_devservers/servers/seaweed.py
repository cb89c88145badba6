"""SeaweedFS's ``weed mini`` (master, volume, filer and S3 in one process) as the platform's S3, on 127.0.0.1.

SeaweedFS's S3 gateway honours conditional puts (``If-None-Match: *``), which the model registry relies on to never
overwrite a version (SPEC §4). ``weed mini`` also starts admin, WebDAV, Iceberg and Lance endpoints; each port it
opens gets its own free port (so parallel test sessions and a developer's ``make up`` never collide) and the extras
are switched off.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import secrets
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from forkcast_devservers.binaries import WEED, locate
from forkcast_devservers.ports import free_ports
from forkcast_devservers.ready import http_ok
from forkcast_devservers.servers.base import HOST, Server

# Every port flag of `weed mini`; "s3.port" is the one clients use.
PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)
REGION = "us-east-1"


class Seaweed(Server):
    """``weed mini`` with data under ``dir``; ``access_key``/``secret_key`` become its admin S3 identity."""

    what = "weed-mini"

    def __init__(
        self,
        dir: Path,
        *,
        access_key: str = "forkcast",
        secret_key: str | None = None,
        port: int | None = None,
        ports: Mapping[str, int] | None = None,
    ) -> None:
        """``port`` fixes the S3 port; ``ports`` fixes any of ``PORT_FLAGS`` (the rest are chosen free).
        Without ``secret_key`` each server gets a random one (no shared literal credential in the tree)."""
        chosen = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True))
        chosen.update(ports or {})
        if port is not None:
            chosen["s3.port"] = port
        super().__init__(dir, port=chosen["s3.port"])
        self.ports = chosen
        self.access_key = access_key
        self.secret_key = secret_key if secret_key is not None else secrets.token_urlsafe(24)

    @property
    def endpoint(self) -> str:
        """The S3 endpoint URL."""
        return f"http://{HOST}:{self.port}"

    def env(self) -> dict[str, str]:
        # weed mini makes these the credentials of its admin S3 identity.
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def client_env(self, bucket: str) -> dict[str, str]:
        """The environment an S3 client of this server needs (forkcast's settings names)."""
        return {
            "S3_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": REGION,
            "FORKCAST_BUCKET": bucket,
        }

    def argv(self) -> list[str]:
        return [
            locate(WEED),
            "mini",
            f"-dir={self.dir / 'data'}",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            *(f"-{flag}={self.ports[flag]}" for flag in PORT_FLAGS),
        ]

    def ready(self) -> bool:
        return http_ok(f"{self.endpoint}/healthz")

    def create_bucket(self, name: str) -> None:
        """Create bucket ``name``; an existing one is fine (409 BucketAlreadyOwnedByYou).

        Callers with boto3 use it; this is for the fixtures here, which may not import it (MLflow's artifact bucket).
        """
        request = signed_request(
            "PUT", f"{self.endpoint}/{name}", access_key=self.access_key, secret_key=self.secret_key
        )
        try:
            with urllib.request.urlopen(request, timeout=10):
                return
        except urllib.error.HTTPError as err:
            if err.code != 409:
                raise RuntimeError(f"creating bucket {name} failed: {err.code} {err.read()[:300]!r}") from err


def signed_request(method: str, url: str, *, access_key: str, secret_key: str) -> urllib.request.Request:
    """An S3 request without a body, signed with AWS Signature Version 4 in the Authorization header.

    Follows https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html: canonical request
    (method, path, query, headers, signed header names, payload hash) -> string to sign -> HMAC-SHA256 with the key
    derived from the secret, date, region and service.
    """
    parts = urllib.parse.urlsplit(url)
    now = datetime.datetime.now(datetime.UTC)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload = hashlib.sha256(b"").hexdigest()
    headers = {"host": parts.netloc, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(
        [
            method,
            parts.path or "/",
            parts.query,
            *(f"{k}:{headers[k]}" for k in sorted(headers)),
            "",
            signed,
            payload,
        ]
    )
    scope = f"{day}/{REGION}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = f"AWS4{secret_key}".encode()
    for part in (day, REGION, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    auth = f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"
    return urllib.request.Request(
        url,
        method=method,
        headers={**{k: v for k, v in headers.items() if k != "host"}, "Authorization": auth},
    )
