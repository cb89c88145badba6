"""The Secret commands of docs/operations.md, run as an operator runs them (bash, openssl, sha256sum, keygen) against a
`kubectl` that records each `create secret generic` instead of calling a cluster: every Secret and key of
manifests/provided-by-cluster.yaml is created, in its namespace, and what is created is what each consumer accepts.
The Redis URLs authenticate as their ACL user on a real redis-server started with the rendered ACL file filled from
the documented hashes, the request-id secret and the API key file load in the gateway's own readers.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import textwrap
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml
from forkcast_delivery import redis_acl
from forkcast_delivery.render import Doc, render

from forkcast_devservers.servers import RedisServer
from forkcast_gateway.auth import ApiKey, hash_key, parse_key_file
from forkcast_gateway.request_ids import read_secrets

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "operations.md"
# Secrets that live outside the forkcast namespaces (the training Workflow's namespace).
NAMESPACE = {"forkcast-retrain-credentials": "forkcast-training"}
# The values only the operator has, which the documented commands take from the environment.
OPERATOR_VALUES = {
    "MODEL_BUCKET_READER_KEY_ID": "AKIAEXAMPLEREADER",
    "MODEL_BUCKET_READER_SECRET": "reader-secret",
    "GITLAB_TRIGGER_TOKEN": "glptt-example",
    "TRAINING_KEY_ID": "AKIAEXAMPLETRAINING",
    "TRAINING_SECRET": "training-secret",
    "LAKE_WRITER_KEY_ID": "AKIAEXAMPLELAKE",
    "LAKE_WRITER_SECRET": "lake-secret",
}
# A kubectl that writes `-n NS create secret generic NAME --from-literal=K=V | --from-file=K=PATH` to
# $SECRETS/NS/NAME/K (and refuses anything else, so a documented command it cannot record fails the test).
RECORDING_KUBECTL = """\
import os, pathlib, shutil, sys
args = sys.argv[1:]
ns = "default"
if args[:1] == ["-n"]:
    ns, args = args[1], args[2:]
if args[:3] != ["create", "secret", "generic"]:
    sys.exit(f"kubectl (recording): not a create secret generic: {sys.argv[1:]}")
name, sources = args[3], args[4:]
folder = pathlib.Path(os.environ["SECRETS"]) / ns / name
if folder.exists():
    sys.exit(f'error: failed to create secret secrets "{name}" already exists')
folder.mkdir(parents=True)
for source in sources:
    kind, _, spec = source.partition("=")
    key, _, value = spec.partition("=")
    if kind == "--from-literal":
        (folder / key).write_text(value)
    elif kind == "--from-file":
        shutil.copyfile(value, folder / key)
    else:
        sys.exit(f"kubectl (recording): unknown option {source}")
"""


def secret_blocks(text: str) -> list[str]:
    """The fenced bash blocks of the document that create Secrets, dedented (one sits inside a list item)."""
    blocks = re.findall(r"^( *)```bash\n(.*?)^\1```", text, flags=re.MULTILINE | re.DOTALL)
    return [textwrap.dedent(body) for _, body in blocks if "create secret generic" in body]


def run_blocks(blocks: list[str], workdir: Path) -> dict[str, dict[str, dict[str, str]]]:
    """Each block run by bash in ``workdir``; the recorded Secrets as namespace → name → key → value."""
    bin_dir, store = workdir / "bin", workdir / "secrets"
    bin_dir.mkdir()
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(f"#!{sys.executable}\n{RECORDING_KUBECTL}")
    kubectl.chmod(0o755)
    # `.venv/bin/forkcast-gateway` as the document writes it, from the operator's checkout.
    (workdir / ".venv").symlink_to(ROOT / ".venv")
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HOME": str(workdir),
        "SECRETS": str(store),
        **OPERATOR_VALUES,
    }
    for block in blocks:
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert proc.returncode == 0, f"{proc.stderr}\n--- block:\n{block}"
    return {
        ns.name: {
            secret.name: {key.name: key.read_text() for key in secret.iterdir()} for secret in ns.iterdir()
        }
        for ns in store.iterdir()
    }


@pytest.fixture(scope="module")
def operator_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the operator ran the commands (keygen leaves the client's key there)."""
    return tmp_path_factory.mktemp("operator")


@pytest.fixture(scope="module")
def created(operator_dir: Path) -> dict[str, dict[str, dict[str, str]]]:
    return run_blocks(secret_blocks(DOC.read_text()), operator_dir)


@pytest.fixture(scope="module")
def docs() -> list[Doc]:
    return list(render(ROOT / "manifests" / "overlays" / "prod").docs)


def missing(
    created: dict[str, dict[str, dict[str, str]]], provided: dict[str, dict[str, list[str]]]
) -> list[str]:
    """Each provided Secret (or key) the commands did not create in its namespace, as ``ns/name[/key]``."""
    out = []
    for name, entry in provided.items():
        ns = NAMESPACE.get(name, "forkcast")
        secret = created.get(ns, {}).get(name)
        if secret is None:
            out.append(f"{ns}/{name}")
            continue
        out += [f"{ns}/{name}/{key}" for key in entry["keys"] if not secret.get(key, "").strip()]
    return out


def test_every_provided_secret_has_a_command_that_creates_it(
    created: dict[str, dict[str, dict[str, str]]],
) -> None:
    provided = yaml.safe_load((ROOT / "manifests" / "provided-by-cluster.yaml").read_text())["secrets"]
    assert missing(created, provided) == []


def test_twin_a_secret_without_a_command_is_named(tmp_path: Path) -> None:
    """The request-id Secret (a pod volume: without it the gateway never starts) left out of the commands."""
    blocks = [
        "\n".join(line for line in b.splitlines() if "forkcast-gateway-request-id" not in line)
        for b in secret_blocks(DOC.read_text())
    ]
    provided = yaml.safe_load((ROOT / "manifests" / "provided-by-cluster.yaml").read_text())["secrets"]
    assert missing(run_blocks(blocks, tmp_path), provided) == ["forkcast/forkcast-gateway-request-id"]


def test_the_gateway_accepts_its_request_id_secret_and_key_file(
    created: dict[str, dict[str, dict[str, str]]], operator_dir: Path, tmp_path: Path
) -> None:
    """The gateway's own readers load both files (a refused one keeps the gateway from starting), and the key file
    admits the key keygen handed the client."""
    made = created["forkcast"]
    (tmp_path / "request-id").write_text(made["forkcast-gateway-request-id"]["keys"])
    assert len(read_secrets(tmp_path / "request-id")) == 1
    client_key = (operator_dir / "mobile-app.key").read_text().splitlines()[1]
    assert parse_key_file(made["forkcast-api-keys"]["keys"]) == [
        ApiKey("mobile-app", bytes.fromhex(hash_key(client_key)), frozenset())
    ]


@pytest.fixture(scope="module", params=("redis", "redis-events"))
def instance(
    request: pytest.FixtureRequest,
    docs: list[Doc],
    created: dict[str, dict[str, dict[str, str]]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, RedisServer]]:
    """A redis-server with the rendered directives and the ACL file the init container builds from the documented
    forkcast-redis-acl (the init container and redis_acl.fill build the same file: tests/delivery/test_redis.py)."""
    name = str(request.param)
    (config,) = {id(c): c for c in redis_acl.config_maps(docs, name).values()}.values()
    folder = tmp_path_factory.mktemp(name)
    hashes = {user: digest.strip() for user, digest in created["forkcast"]["forkcast-redis-acl"].items()}
    (folder / "users.acl").write_text(redis_acl.fill(config["data"][redis_acl.ACL_KEY], hashes))
    with RedisServer(folder, conf=redis_acl.flags(config), aclfile=folder / "users.acl") as server:
        yield name, server


def test_each_documented_redis_url_authenticates_as_its_user(
    instance: tuple[str, RedisServer], created: dict[str, dict[str, dict[str, str]]]
) -> None:
    name, server = instance
    key = "features-url" if name == "redis" else "events-url"
    urls = {
        secret.removeprefix("forkcast-redis-"): keys[key]
        for secret, keys in created["forkcast"].items()
        if secret.startswith("forkcast-redis-") and key in keys
    }
    assert set(urls) == (
        {"gateway", "inference", "drift", "loader"}
        if name == "redis"
        else {"gateway", "inference", "online-auc", "drift", "lake", "feature-updates"}
    )
    for user, url in urls.items():
        parts = urllib.parse.urlsplit(url)
        # The Service the pods reach it by, on its port.
        assert (parts.hostname, parts.port, parts.username) == (name, 6379, user), url
        local = parts._replace(netloc=f"{parts.netloc.rsplit('@', 1)[0]}@{server.host}:{server.port}")
        # AUTH <user> <password> from the URL, then a command the user may run.
        assert redis.Redis.from_url(urllib.parse.urlunsplit(local)).ping(), user
    # The exporter's password (the sidecar and the readiness probe) against the hash the init container wrote.
    exporter = redis.Redis(
        host=server.host,
        port=server.port,
        username="exporter",
        password=created["forkcast"]["forkcast-redis-exporter"]["password"],
    )
    assert exporter.ping()
    # A password that is not the documented one: refused, so the check above is not a formality.
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(
            host=server.host, port=server.port, username="exporter", password=secrets.token_hex(8)
        ).ping()
