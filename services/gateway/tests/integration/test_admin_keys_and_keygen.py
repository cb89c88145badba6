"""``POST /admin/keys/reload`` says when the file is bad (issue 18.6); ``forkcast-gateway keygen`` makes keys the
gateway loads."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from forkcast_gateway.auth import KeyFileError, parse_key_file
from forkcast_gateway.edge import Edge
from forkcast_gateway.main import main
from forkcast_gateway.testing import ADMIN_KEY, KEY, StandIn, serve, write_keys

BODY = b'{"candidate_restaurant_ids":[1],"latitude":1.0,"longitude":1.0}'


def test_a_bad_key_file_fails_the_reload_loudly_and_keeps_the_keys(
    make_gateway: Callable[..., Edge], tmp_path: Path
) -> None:
    """Before the fix the reload answered 200 {"keys": 2} over a file it had not loaded."""
    path = write_keys(tmp_path / "keys", {"user": (KEY, ""), "ops": (ADMIN_KEY, "admin")})
    with (
        serve(StandIn()) as up,
        serve(make_gateway(upstreams=up, api_keys_file=path, keys_reload_s=3600)) as gw,
    ):
        reload = f"{gw}/admin/keys/reload"
        path.write_text(path.read_text() + "not a key line\n")
        r = requests.post(reload, headers={"x-api-key": ADMIN_KEY}, timeout=5)
        assert r.status_code == 409
        assert r.json()["detail"] == (
            "key file not loaded, keeping the 2 current keys: line 3 is not <key-id>:<sha256-hex>[:scopes]"
        )
        assert requests.post(f"{gw}/recommend/u1", data=BODY, headers={"x-api-key": KEY}, timeout=5).ok
        path.unlink()
        gone = requests.post(reload, headers={"x-api-key": ADMIN_KEY}, timeout=5)
        assert gone.status_code == 409 and "No such file" in gone.json()["detail"]
        write_keys(path, {"ops": (ADMIN_KEY, "admin")})
        fixed = requests.post(reload, headers={"x-api-key": ADMIN_KEY}, timeout=5)
        assert (fixed.status_code, fixed.json()) == (200, {"keys": 1})
        assert (
            requests.post(f"{gw}/recommend/u1", data=BODY, headers={"x-api-key": KEY}, timeout=5).status_code
            == 401
        )


def test_keygen_prints_a_key_and_the_line_that_admits_it(
    capsys: pytest.CaptureFixture[str], make_gateway: Callable[..., Edge], tmp_path: Path
) -> None:
    assert main(["keygen", "--id", "ci-bot", "--admin"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [x.startswith("#") for x in lines] == [True, False, True, False]
    key, line = lines[1], lines[3]
    assert len(key) >= 43  # 256 bits, base64url
    (parsed,) = parse_key_file(line)
    assert (parsed.key_id, parsed.scopes) == ("ci-bot", frozenset({"admin"}))
    assert parsed.digest == hashlib.sha256(key.encode()).digest()
    path = tmp_path / "keys"
    path.write_text(line + "\n")
    with serve(make_gateway(api_keys_file=path)) as gw:
        r = requests.post(f"{gw}/admin/keys/reload", headers={"x-api-key": key}, timeout=5)
        assert (r.status_code, r.json()) == (200, {"keys": 1})


@pytest.mark.parametrize("key_id", ["-", "has space", "x" * 65, ""])
def test_keygen_refuses_an_id_the_key_file_would_not_take(
    capsys: pytest.CaptureFixture[str], key_id: str
) -> None:
    assert main(["keygen", "--id", key_id]) == 2
    assert "key id" in capsys.readouterr().err


def test_the_reserved_no_key_id_cannot_name_a_key() -> None:
    with pytest.raises(KeyFileError, match="reserved for calls without a key"):
        parse_key_file("-:" + "0" * 64)
