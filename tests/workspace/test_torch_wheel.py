"""How `make setup` gets torch on any machine (scripts/torch_wheel.py, issue 17.7).

uv.lock must name torch by a repository-relative path with its sha256 (never a machine path, never PyPI's CUDA
build); the setup step links the wheel from a local folder when it is there and otherwise downloads it from
PyTorch's CPU index, both checked against the lock. The download route is rehearsed against a real HTTP server on
loopback that serves a simple-API project page the way download.pytorch.org does (absolute hrefs with a
``#sha256=`` fragment); the file is a small stand-in, since only its name and hash matter to the choice.
"""

from __future__ import annotations

import hashlib
import http.server
import importlib.metadata
import importlib.util
import re
import subprocess
import sys
import threading
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "torch_wheel.py"
FILENAME = "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
PAYLOAD = b"a stand-in for the CPU wheel" * 1000


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("torch_wheel", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["torch_wheel"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


tw = _load()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _locked(data: bytes = PAYLOAD) -> object:
    return tw.LockedWheel(path=f".tools/wheels/{FILENAME}", filename=FILENAME, sha256=_sha(data))


def _lock_text(data: bytes = PAYLOAD) -> str:
    return f"""version = 1
[[package]]
name = "torch"
version = "2.13.0+cpu"
source = {{ path = ".tools/wheels/{FILENAME}" }}
wheels = [{{ filename = "{FILENAME}", hash = "sha256:{_sha(data)}" }}]
"""


@pytest.fixture
def wheel_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "opt-wheels"
    folder.mkdir()
    (folder / FILENAME).write_bytes(PAYLOAD)
    return folder


class _Index:
    """A simple-API index on 127.0.0.1: ``/whl/cpu/torch/`` lists the wheel; every request path is recorded."""

    def __init__(self, page_hash: str | None, served: bytes, listed_name: str = FILENAME) -> None:
        self.requests: list[str] = []
        index = self
        quoted = listed_name.replace("+", "%2B")
        fragment = f"#sha256={page_hash}" if page_hash else ""
        page = f'<!DOCTYPE html><html><body><a href="/whl/cpu/{quoted}{fragment}">{listed_name}</a><br/></body></html>'

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                index.requests.append(self.path)
                body = {"/whl/cpu/torch/": page.encode(), f"/whl/cpu/{quoted}": served}.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/whl/cpu"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> _Index:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- the lock itself ---------------------------------------------------------------------------------------------


def _lock() -> dict[str, object]:
    return tomllib.loads((ROOT / "uv.lock").read_text())


def test_lock_takes_torch_from_a_relative_path_pinned_by_sha256() -> None:
    locked = tw.locked_torch((ROOT / "uv.lock").read_text())
    assert locked.path == f".tools/wheels/{locked.filename}"
    assert re.fullmatch(r"torch-\d+\.\d+\.\d+\+cpu-cp311-cp311-manylinux_2_28_x86_64\.whl", locked.filename)
    assert re.fullmatch(r"[0-9a-f]{64}", locked.sha256)


def test_lock_names_no_machine_path() -> None:
    """Every source and file in uv.lock is an index URL or a path inside the repository (it had /opt/wheels)."""
    absolute = []
    for pkg in _lock()["package"]:  # type: ignore[attr-defined]
        places = [*pkg["source"].values(), *(w.get("path", "") for w in pkg.get("wheels", []))]
        places += [pkg.get("sdist", {}).get("path", "")]
        absolute += [f"{pkg['name']}: {p}" for p in places if str(p).startswith(("/", "file:"))]
    assert absolute == []


def test_no_cuda_package_would_be_installed_on_linux_x86_64() -> None:
    """The lock covers only linux x86_64 (``environments``) and holds none of the CUDA packages PyPI's torch 2.13.0
    pulls there (nvidia-*, cuda-*, triton: 19 packages, about 2 GiB, when resolved from PyPI)."""
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert root["tool"]["uv"]["environments"] == ["sys_platform == 'linux' and platform_machine == 'x86_64'"]
    names = {pkg["name"] for pkg in _lock()["package"]}  # type: ignore[attr-defined]
    assert {n for n in names if n.startswith(("nvidia-", "cuda-", "triton"))} == set()


def test_the_venv_holds_the_locked_cpu_build() -> None:
    """What `make setup` installed: torch at the locked +cpu version, and no CUDA runtime next to it."""
    locked = tw.locked_torch((ROOT / "uv.lock").read_text())
    assert importlib.metadata.version("torch") == locked.filename.split("-")[1]
    assert importlib.metadata.version("torch").endswith("+cpu")
    installed = {d.metadata["Name"].lower() for d in importlib.metadata.distributions()}
    assert {n for n in installed if n.startswith("nvidia-")} == set()


def test_setup_puts_the_wheel_in_place_before_the_locked_sync() -> None:
    out = subprocess.run(
        ["make", "-n", "setup"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    ).stdout.splitlines()
    step = next(i for i, line in enumerate(out) if "scripts/torch_wheel.py" in line)
    sync = next(i for i, line in enumerate(out) if " sync " in line and "--locked" in line)
    assert step < sync


def test_the_download_route_is_the_index_the_retrain_image_installs_from() -> None:
    dockerfile = (ROOT / "pipelines" / "retrain" / "Dockerfile").read_text()
    assert f"ARG TORCH_INDEX_URL={tw.DEFAULT_INDEX_URL}\n" in dockerfile
    assert tw.DEFAULT_INDEX_URL == "https://download.pytorch.org/whl/cpu"


def test_a_lock_with_a_machine_path_is_refused() -> None:
    old = _lock_text().replace('path = ".tools/wheels/', 'path = "/opt/wheels/')
    with pytest.raises(tw.WheelError, match="repository-relative path"):
        tw.locked_torch(old)


# -- which route this machine takes -----------------------------------------------------------------------------


def test_the_local_wheel_folder_is_taken_when_it_holds_the_wheel(tmp_path: Path, wheel_dir: Path) -> None:
    plan = tw.choose(_locked(), tmp_path, wheel_dir, "https://index.invalid/whl/cpu")
    assert plan == tw.Plan("link", str(wheel_dir / FILENAME))


def test_pytorchs_cpu_index_is_taken_without_the_folder(tmp_path: Path) -> None:
    plan = tw.choose(_locked(), tmp_path, tmp_path / "absent", tw.DEFAULT_INDEX_URL)
    assert plan == tw.Plan("download", "https://download.pytorch.org/whl/cpu/torch/")


def test_nothing_is_done_when_the_wheel_is_already_in_place(tmp_path: Path) -> None:
    target = tmp_path / ".tools" / "wheels" / FILENAME
    target.parent.mkdir(parents=True)
    target.write_bytes(PAYLOAD)
    assert tw.choose(_locked(), tmp_path, tmp_path / "absent", tw.DEFAULT_INDEX_URL) == tw.Plan(
        "present", str(target)
    )
    assert tw.ensure(_locked(), tmp_path, tmp_path / "absent", "http://127.0.0.1:9/whl/cpu") is None


def test_a_local_wheel_with_another_hash_is_refused_not_linked(tmp_path: Path, wheel_dir: Path) -> None:
    (wheel_dir / FILENAME).write_bytes(PAYLOAD + b"tampered")
    with pytest.raises(tw.WheelError) as refused:
        tw.choose(_locked(), tmp_path, wheel_dir, tw.DEFAULT_INDEX_URL)
    assert str(refused.value).startswith(f"{wheel_dir / FILENAME} has sha256 {_sha(PAYLOAD + b'tampered')}")
    assert f"uv.lock pins {_sha(PAYLOAD)}" in str(refused.value)


def test_link_route_replaces_a_stale_file_with_a_link(tmp_path: Path, wheel_dir: Path) -> None:
    target = tmp_path / ".tools" / "wheels" / FILENAME
    target.parent.mkdir(parents=True)
    target.write_bytes(b"an older download")
    done = tw.ensure(_locked(), tmp_path, wheel_dir, "http://127.0.0.1:9/whl/cpu")
    assert done == f"torch wheel: .tools/wheels/{FILENAME} -> {wheel_dir / FILENAME} (local wheel folder)"
    assert target.is_symlink() and target.resolve() == (wheel_dir / FILENAME).resolve()
    assert tw.ensure(_locked(), tmp_path, wheel_dir, "http://127.0.0.1:9/whl/cpu") is None


# -- the download route, against a real HTTP server -------------------------------------------------------------


def test_download_route_fetches_the_file_the_index_lists(tmp_path: Path) -> None:
    with _Index(page_hash=_sha(PAYLOAD), served=PAYLOAD) as index:
        done = tw.ensure(_locked(), tmp_path, tmp_path / "absent", index.url)
    quoted = FILENAME.replace("+", "%2B")
    assert done == f"torch wheel: .tools/wheels/{FILENAME} downloaded from {index.url}/{quoted}"
    assert index.requests == ["/whl/cpu/torch/", f"/whl/cpu/{quoted}"]
    assert (tmp_path / ".tools" / "wheels" / FILENAME).read_bytes() == PAYLOAD


def test_index_listing_another_hash_is_refused_before_downloading(tmp_path: Path) -> None:
    with (
        _Index(page_hash=_sha(b"another build"), served=PAYLOAD) as index,
        pytest.raises(tw.WheelError) as refused,
    ):
        tw.ensure(_locked(), tmp_path, tmp_path / "absent", index.url)
    assert f"lists sha256 {_sha(b'another build')} for {FILENAME}" in str(refused.value)
    assert index.requests == ["/whl/cpu/torch/"]
    assert list((tmp_path / ".tools" / "wheels").iterdir()) == []


def test_downloaded_bytes_with_another_hash_never_land(tmp_path: Path) -> None:
    with (
        _Index(page_hash=None, served=b"not the locked wheel") as index,
        pytest.raises(tw.WheelError) as refused,
    ):
        tw.ensure(_locked(), tmp_path, tmp_path / "absent", index.url)
    assert f"has sha256 {_sha(b'not the locked wheel')}, uv.lock pins {_sha(PAYLOAD)}" in str(refused.value)
    assert list((tmp_path / ".tools" / "wheels").iterdir()) == []  # neither the wheel nor a .part file


def test_an_index_without_the_file_is_refused(tmp_path: Path) -> None:
    other = FILENAME.replace("cp311-cp311", "cp312-cp312")
    with (
        _Index(page_hash=None, served=PAYLOAD, listed_name=other) as index,
        pytest.raises(tw.WheelError) as refused,
    ):
        tw.ensure(_locked(), tmp_path, tmp_path / "absent", index.url)
    assert str(refused.value) == f"{index.url}/torch/ does not list {FILENAME}"


def test_cli_reports_an_unreachable_index_and_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "uv.lock").write_text(_lock_text())
    with _Index(page_hash=None, served=PAYLOAD) as index:
        closed = index.url  # the server is shut down when the block ends: nothing listens there any more
    monkeypatch.setenv("FORKCAST_TORCH_WHEELS", str(tmp_path / "absent"))
    monkeypatch.setenv("FORKCAST_TORCH_INDEX_URL", closed)
    assert tw.main(["--lock", str(tmp_path / "uv.lock")]) == 1
    assert f"torch wheel: cannot read the index page {closed}/torch/" in capsys.readouterr().err


def test_cli_links_from_the_folder_the_environment_names(
    tmp_path: Path, wheel_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "uv.lock").write_text(_lock_text())
    monkeypatch.setenv("FORKCAST_TORCH_WHEELS", str(wheel_dir))
    assert tw.main(["--lock", str(tmp_path / "uv.lock")]) == 0
    assert capsys.readouterr().out.strip().endswith(f"-> {wheel_dir / FILENAME} (local wheel folder)")
    assert (tmp_path / ".tools" / "wheels" / FILENAME).is_symlink()
