"""The render -> plan translation (plan.py) on the real local overlay and on edited copies of it; no process starts."""

from __future__ import annotations

import copy
import dataclasses
import shutil
import stat
from pathlib import Path

import pytest
import yaml
from forkcast_delivery.render import Render, render

from forkcast_local.local_secrets import LocalSecrets
from forkcast_local.plan import RUN_KINDS, ContainerPlan, PlanError, Planner, expand

ROOT = Path(__file__).resolve().parents[3]
OVERLAY = ROOT / "manifests" / "overlays" / "local"


def _planner(rendered: Render, tmp: Path, overlay_dir: Path = OVERLAY) -> Planner:
    provided = yaml.safe_load((ROOT / "manifests" / "provided-by-cluster.yaml").read_text())["secrets"]
    ports = iter(range(31000, 32000))
    return Planner(
        render=rendered,
        root=ROOT,
        overlay_dir=overlay_dir,
        pods_dir=tmp / "pods",
        secrets=LocalSecrets(tmp / "secrets", provided),
        port_for=lambda workload, name, number: next(ports),
        bin_dir=tmp / "bin",
        extra_hosts={"seaweed": {8333: 30333}},
    )


@pytest.fixture(scope="module")
def local_render() -> Render:
    return render(OVERLAY)


def _plans(rendered: Render, tmp: Path) -> dict[str, ContainerPlan]:
    return {p.name: p for p in _planner(rendered, tmp).plans() if not p.init}


def test_expand_follows_kubernetes_variable_references() -> None:
    env = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)", env) == "1-two"
    assert expand("$(MISSING)", env) == "$(MISSING)"  # unresolved: left unchanged
    assert expand("$$(A)", env) == "$(A)"  # $$ escapes
    assert expand("cost $$5", env) == "cost $5"


def test_every_workload_of_the_render_is_planned(local_render: Render, tmp_path: Path) -> None:
    workloads = {d["metadata"]["name"] for d in local_render.docs if d["kind"] in RUN_KINDS}
    assert {"gateway", "inference", "online-auc", "drift", "alert-receiver", "redis"} <= workloads
    planned = {p.workload for p in _planner(local_render, tmp_path).plans()}
    assert planned == workloads


def test_environment_ports_and_service_names_are_localised(local_render: Render, tmp_path: Path) -> None:
    planner = _planner(local_render, tmp_path)
    plans = {p.name: p for p in planner.plans() if not p.init}
    gateway, inference = plans["gateway"], plans["inference"]
    assert gateway.env["FORKCAST_ENVIRONMENT"] == "local"
    assert gateway.env["FORKCAST_HOST"] == "127.0.0.1"
    assert gateway.env["FORKCAST_PORT"] == str(gateway.ports["http"])
    # dns+http://inference-pods:8001 (discovery through a headless Service) -> the inference pod's loopback port
    assert gateway.env["FORKCAST_UPSTREAMS"] == f"http://127.0.0.1:{inference.ports['http']}"
    # A URL's user ("gateway") is not mistaken for the gateway Service; its host "redis" is mapped.
    redis_port = plans["redis"].ports["redis"]
    assert gateway.env["REDIS_URL"].startswith("redis://gateway:")
    assert gateway.env["REDIS_URL"].endswith(f"@127.0.0.1:{redis_port}/0")
    assert inference.env["S3_ENDPOINT_URL"] == "http://127.0.0.1:30333"
    assert planner.localise("http://alert-receiver.forkcast-local.svc:9109/alerts") == (
        f"http://127.0.0.1:{plans['alert-receiver'].ports['http']}/alerts"
    )
    # Readiness from the rendered probe, at the loopback port; the grace period of Kubernetes' default.
    assert inference.readiness is not None and inference.readiness.path == "/readyz"
    assert inference.readiness.port == inference.ports["http"] and inference.readiness.kind == "http"
    assert inference.termination_grace_s == 30.0


def test_mounted_secrets_are_files_at_the_mount_path_readable_by_the_owner_only(
    local_render: Render, tmp_path: Path
) -> None:
    gateway = _plans(local_render, tmp_path)["gateway"]
    keys = Path(gateway.env["FORKCAST_API_KEYS_FILE"])
    assert keys == tmp_path / "pods" / "gateway" / "etc" / "forkcast" / "api-keys" / "keys"
    assert keys.read_text().startswith("local-demo:")
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    secret_files = [p for p in (tmp_path / "secrets").rglob("*") if p.is_file()]
    assert secret_files and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in secret_files)
    # Redis's config file names the pod's paths; they point into the pod's local folder.
    conf = (tmp_path / "pods" / "redis" / "etc" / "redis" / "conf" / "redis.conf").read_text()
    assert f"dir {tmp_path / 'pods' / 'redis' / 'data'}" in conf


def test_a_workload_deleted_from_the_base_is_not_planned(tmp_path: Path) -> None:
    copy_root = tmp_path / "tree"
    for folder in ("manifests", "rollouts"):
        shutil.copytree(ROOT / folder, copy_root / folder)
    kustomization = copy_root / "manifests" / "base" / "kustomization.yaml"
    text = kustomization.read_text()
    assert "  - drift.yaml\n" in text
    kustomization.write_text(text.replace("  - drift.yaml\n", ""))
    rendered = render(copy_root / "manifests" / "overlays" / "local")
    plans = _planner(rendered, tmp_path, copy_root / "manifests" / "overlays" / "local").plans()
    assert "drift" not in {p.workload for p in plans}
    assert {"gateway", "inference", "online-auc"} <= {p.workload for p in plans}


def test_a_command_that_is_no_console_script_is_refused_by_name(local_render: Render, tmp_path: Path) -> None:
    docs = copy.deepcopy(list(local_render.docs))
    for doc in docs:
        if doc["kind"] == "Deployment" and doc["metadata"]["name"] == "gateway":
            doc["spec"]["template"]["spec"]["containers"][0]["command"] = ["forkcast-gatewy"]
    broken = dataclasses.replace(local_render, docs=tuple(docs))
    with pytest.raises(
        PlanError, match=r"Deployment/gateway container gateway runs 'forkcast-gatewy', not a console"
    ):
        _planner(broken, tmp_path).plans()


def test_status_lists_a_rendered_container_not_run_here_with_its_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The Redis pods' exporter sidecar is in the render; where its program is missing (Debian's package lacks the
    rendered flags) `forkcast-local status` says so instead of hiding it."""
    from forkcast_devservers.binaries import Binary
    from forkcast_local import cli, plan

    absent = Binary(("redis_exporter-not-installed",), "an upstream redis_exporter (test)")
    monkeypatch.setitem(
        plan.THIRD_PARTY,
        "redis_exporter",
        dataclasses.replace(plan.THIRD_PARTY["redis_exporter"], binary=absent),
    )
    monkeypatch.setattr(
        plan, "THIRD_PARTY_MARKERS", {f"<third-party:{n}>": p for n, p in plan.THIRD_PARTY.items()}
    )
    assert cli.main(["--root", str(tmp_path), "status"]) == 1  # nothing runs in a fresh root
    lines = [
        line
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("not run locally: ") and " container " in line  # CronJobs: the test below
    ]
    assert lines and all(
        "container exporter" in line and "redis_exporter-not-installed" in line for line in lines
    )
    assert {line.split()[3] for line in lines} == {"StatefulSet/redis", "StatefulSet/redis-events"}


def test_the_served_log_compaction_runs_locally_from_the_render(local_render: Render, tmp_path: Path) -> None:
    """`forkcast-local up` runs lake-compact (image forkcast-lake) as `forkcast-lake compact`, against the events
    Redis as user lake and the local S3 with the same identity as the other pods (weed mini has one)."""
    plans = _plans(local_render, tmp_path)
    lake, inference = plans["lake-compact"], plans["inference"]
    assert Path(lake.argv[0]).name == "forkcast-lake" and tuple(lake.argv[1:]) == ("compact",)
    events_port = plans["redis-events/redis"].ports["redis"]
    assert lake.env["FORKCAST_EVENTS_REDIS_URL"].startswith("redis://lake:")
    assert lake.env["FORKCAST_EVENTS_REDIS_URL"].endswith(f"@127.0.0.1:{events_port}/0")
    assert lake.env["FORKCAST_LAKE_URI"] == "s3://forkcast-lake"
    assert lake.env["S3_ENDPOINT_URL"] == "http://127.0.0.1:30333"
    assert lake.env["AWS_ACCESS_KEY_ID"] == inference.env["AWS_ACCESS_KEY_ID"]
    assert lake.env["FORKCAST_METRICS_PORT"] == str(lake.ports["metrics"])
    assert lake.readiness is not None and lake.readiness.path == "/readyz"


def test_a_cronjob_is_not_started_and_said_not_run_locally(local_render: Render, tmp_path: Path) -> None:
    """The lake's daily upkeep (CronJob lake-maintain) is in the local render; `up` starts no pod for it (it is no
    long-running pod) and `status` lists it with its command."""
    assert [d["metadata"]["name"] for d in local_render.docs if d["kind"] == "CronJob"] == ["lake-maintain"]
    planner = _planner(local_render, tmp_path)
    assert "lake-maintain" not in {p.workload for p in planner.plans()}
    assert (
        "CronJob/lake-maintain: scheduled (17 3 * * *), not a long-running pod; run `forkcast-lake maintain` by "
        "hand when wanted" in planner.skipped
    )
