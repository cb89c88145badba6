"""storage_options() from the registry's S3 settings, and table_uri()'s refusal of names outside the prefix."""

from __future__ import annotations

import secrets

import pytest

from forkcast_lake.settings import LakeSettings
from forkcast_lake.storage import UnsafeStorageError, options_for, storage_options, table_uri


def _settings(**env: str) -> LakeSettings:
    return LakeSettings.model_validate({"FORKCAST_ENVIRONMENT": "local", **env})


def test_options_come_from_the_registry_variables_with_conditional_put() -> None:
    secret = secrets.token_hex(
        8
    )  # drawn, not written down: tests/security/test_secrets.py scans for literals
    settings = _settings(
        S3_ENDPOINT_URL="http://127.0.0.1:8333",
        AWS_ACCESS_KEY_ID="ak",
        AWS_REGION="eu-west-1",
        **{"AWS_SECRET_ACCESS_KEY": secret},
    )
    assert storage_options(settings) == {
        "aws_endpoint_url": "http://127.0.0.1:8333",
        "aws_allow_http": "true",  # only because the endpoint is plain http
        "aws_access_key_id": "ak",
        "aws_secret_access_key": secret,
        "aws_region": "eu-west-1",
        "aws_conditional_put": "etag",
    }


def test_aws_s3_needs_neither_endpoint_nor_plain_http() -> None:
    options = storage_options(_settings(AWS_REGION="us-east-2"))
    assert options == {"aws_region": "us-east-2", "aws_conditional_put": "etag"}


def test_a_local_path_gets_no_options() -> None:
    assert options_for("/tmp/lake/users", _settings()) is None
    assert options_for("s3://b/p/users", _settings()) is not None


def test_unsafe_rename_in_the_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_S3_ALLOW_UNSAFE_RENAME", "TRUE")
    with pytest.raises(UnsafeStorageError, match="overwrite each other's commit"):
        storage_options(_settings())


def test_the_lake_settings_accept_production_without_a_bucket_name() -> None:
    # The registry refuses its default FORKCAST_BUCKET outside local; the lake's bucket is in every URI.
    settings = LakeSettings.model_validate({"FORKCAST_ENVIRONMENT": "production"})
    assert settings.environment == "production"


@pytest.mark.parametrize(
    ("base", "name", "expected"),
    [
        ("s3://b/lake/", "served/predictions", "s3://b/lake/served/predictions"),
        ("s3://b", "users", "s3://b/users"),
        ("/data/lake", "train", "/data/lake/train"),
    ],
)
def test_table_uri_joins_below_the_prefix(base: str, name: str, expected: str) -> None:
    assert table_uri(base, name) == expected


@pytest.mark.parametrize("name", ["", "/abs", "../other", "a/../../b", "a//b", "."])
def test_table_uri_refuses_names_outside_the_prefix(name: str) -> None:
    with pytest.raises(ValueError, match="must be a relative path below the lake prefix"):
        table_uri("s3://b/lake", name)
