"""The rules and routes of the rendered manifests, checked with the real promtool and amtool: the PrometheusRule's
groups (rendered once, by manifests/observability) are valid and pass their unit tests (monitoring/prometheus/tests),
the overlays' routes and monitors convert; the generated prometheus.yml and
alertmanager.yml are valid, every metric a rule reads is defined, and what the manifests lack the local
configuration lacks too. Each check has a twin that breaks a scratch copy of the manifests and sees it fail."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from forkcast_delivery.checks.metrics import contract_name, metric_names_in

from forkcast_monitoring import local_alerting, manifest_config
from forkcast_monitoring.manifest_config import MANIFESTS, load

UNIT_TESTS = Path(__file__).parents[2] / "prometheus" / "tests"
OVERLAYS = ["dev", "prod"]
# A missing promtool fails the test with the install hint (devservers fixture), never skips it.
needs_promtool = pytest.mark.usefixtures("promtool")


def run(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, timeout=120)


def scratch_manifests(tmp_path: Path) -> Path:
    """A copy of manifests/ (and rollouts/, which the base includes) to break on purpose."""
    shutil.copytree(MANIFESTS, tmp_path / "manifests")
    shutil.copytree(MANIFESTS.parent / "rollouts", tmp_path / "rollouts")
    return tmp_path / "manifests"


def edit_yaml(path: Path, change: Any) -> None:
    doc = yaml.safe_load(path.read_text())
    change(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def drop_rule(name: str) -> Any:
    def change(doc: dict[str, Any]) -> None:
        for group in doc["spec"]["groups"]:
            group["rules"] = [r for r in group["rules"] if r.get("alert") != name]

    return change


def unit_tests(workdir: Path, manifests: Path = MANIFESTS) -> subprocess.CompletedProcess[str]:
    """``promtool test rules`` over the unit-test files, beside the rule file extracted from the render."""
    local_alerting.rule_file(workdir, "dev", manifests=manifests)
    for test in UNIT_TESTS.glob("*.yml"):
        shutil.copy(test, workdir / test.name)
    return run("promtool", "test", "rules", *sorted(p.name for p in UNIT_TESTS.glob("*.yml")), cwd=workdir)


def alert_names(rule_file: Path) -> set[str]:
    doc = yaml.safe_load(rule_file.read_text())
    return {r["alert"] for g in doc["groups"] for r in g["rules"] if "alert" in r}


@needs_promtool
def test_the_rendered_rules_are_valid(tmp_path: Path) -> None:
    path = local_alerting.rule_file(tmp_path)
    result = run("promtool", "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    (rule,) = [o for o in manifest_config.render_observability() if o["kind"] == "PrometheusRule"]
    rules = sum(len(g["rules"]) for g in rule["spec"]["groups"])
    assert f"SUCCESS: {rules} rules found" in result.stdout
    # Every overlay's config carries those same groups: one copy of the rules, whichever overlay is loaded.
    assert all(load(overlay).rule_groups == tuple(rule["spec"]["groups"]) for overlay in OVERLAYS)


@needs_promtool
def test_the_rule_unit_tests_pass_against_the_rendered_rules(tmp_path: Path) -> None:
    result = unit_tests(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(list(UNIT_TESTS.glob("*.yml")))


@needs_promtool
def test_a_rule_removed_from_the_manifests_is_missing_locally_and_fails_its_unit_test(tmp_path: Path) -> None:
    manifests = scratch_manifests(tmp_path)
    edit_yaml(
        manifests / manifest_config.OBSERVABILITY / "prometheus-rules.yaml",
        drop_rule("ForkcastRolloutPausedTooLong"),
    )
    out = tmp_path / "out"
    out.mkdir()
    cfg = local_alerting.render_prometheus(out, {}, "127.0.0.1:9093", for_s=1, manifests=manifests)
    (rule_file,) = yaml.safe_load(cfg.read_text())["rule_files"]
    assert "ForkcastRolloutPausedTooLong" not in alert_names(Path(rule_file))
    assert "ForkcastRolloutPausedTooLong" in alert_names(local_alerting.rule_file(tmp_path, "dev"))
    result = unit_tests(out, manifests)
    assert result.returncode != 0
    assert "ForkcastRolloutPausedTooLong" in result.stdout + result.stderr


@needs_promtool
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_generated_prometheus_config_scrapes_every_monitor_and_is_valid(
    overlay: str, tmp_path: Path
) -> None:
    config = load(overlay)
    targets = {job.name: f"127.0.0.1:{job.port}" for job in config.scrape_jobs}
    path = local_alerting.render_prometheus(tmp_path, targets, "127.0.0.1:9093", for_s=2, overlay=overlay)
    result = run("promtool", "check", "config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    doc = yaml.safe_load(path.read_text())
    assert {j["job_name"] for j in doc["scrape_configs"]} == set(targets)
    assert all(
        g["labels"]["namespace"] == config.namespace
        for j in doc["scrape_configs"]
        for g in j["static_configs"]
    )


def test_a_job_the_manifests_lack_is_refused(tmp_path: Path) -> None:
    with pytest.raises(
        manifest_config.ManifestConfigError, match="no PodMonitor/ServiceMonitor named 'shop'"
    ):
        local_alerting.render_prometheus(tmp_path, {"shop": "127.0.0.1:1"}, "127.0.0.1:9093", for_s=2)


def test_scrape_jobs_resolve_port_names_to_the_container_ports() -> None:
    jobs = {j.name: j for j in load("dev").scrape_jobs}
    assert (jobs["gateway"].kind, jobs["gateway"].workloads, jobs["gateway"].port) == (
        "ServiceMonitor",
        ("gateway",),
        8000,
    )
    assert (jobs["inference"].kind, jobs["inference"].workloads, jobs["inference"].port) == (
        "PodMonitor",
        ("inference",),
        8001,
    )
    assert jobs["inference"].path == "/metrics"


def edit_monitor(manifests: Path, kind: str, name: str, change: Any) -> None:
    """Apply ``change`` to the monitor ``kind``/``name`` in the scratch copy's monitoring.yaml."""
    path = manifests / "base" / "monitoring.yaml"
    docs = list(yaml.safe_load_all(path.read_text()))
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    change(doc)
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


def test_a_monitor_on_a_port_no_container_declares_is_refused(tmp_path: Path) -> None:
    manifests = scratch_manifests(tmp_path)
    edit_monitor(
        manifests, "PodMonitor", "inference", lambda d: d["spec"]["podMetricsEndpoints"][0].update(port="web")
    )
    with pytest.raises(
        manifest_config.ManifestConfigError,
        match="PodMonitor inference: port 'web' is no container port of workload inference",
    ):
        load("dev", manifests)


def test_every_metric_a_rule_reads_is_defined_in_the_contract_or_by_the_cluster() -> None:
    # Metric names read through the manifests check's PromQL reader (an AST), minus what the rules record.
    rules = [r for g in load("dev").rule_groups for r in g["rules"]]
    recorded = {r["record"] for r in rules if "record" in r}
    used = {n for r in rules for n in metric_names_in(str(r["expr"])) if n.startswith("forkcast_")} - recorded
    assert used, "no metric found in the rules"
    unknown = {n for n in used if contract_name(n) is None}
    assert not unknown, f"rules read metrics nobody defines: {sorted(unknown)}"
    provided = yaml.safe_load((MANIFESTS / "provided-by-cluster.yaml").read_text())["metrics"]
    assert {"rollout_info", "up"} <= set(provided), (
        "the Rollout and TargetDown alerts read metrics nobody lists"
    )


def target_down_misses(overlay: str, manifests: Path = MANIFESTS) -> list[str]:
    """Jobs of the render (named as the operator names them) that TargetDown's job matcher does not cover."""
    config = load(overlay, manifests)
    (expr,) = [r["expr"] for g in config.rule_groups for r in g["rules"] if r.get("alert") == "TargetDown"]
    pattern = re.fullmatch(r'up\{namespace=~"(.+)", job=~"(.+)"\} == 0', expr.strip())
    assert pattern, expr
    if not re.fullmatch(pattern.group(1), config.namespace):
        return [f"namespace {config.namespace}"]
    jobs = [
        j.name if j.kind == "ServiceMonitor" else f"{config.namespace}/{j.name}" for j in config.scrape_jobs
    ]
    return [job for job in jobs if not re.fullmatch(pattern.group(2), job)]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_target_down_covers_every_monitor_of_the_render(overlay: str) -> None:
    assert target_down_misses(overlay) == []


def test_target_down_misses_a_monitor_it_does_not_name(tmp_path: Path) -> None:
    manifests = scratch_manifests(tmp_path)
    edit_monitor(manifests, "PodMonitor", "inference", lambda d: d["metadata"].update(name="scorer"))
    assert target_down_misses("dev", manifests) == ["forkcast-dev/scorer"]


def paused_too_long_margin(overlay: str, manifests: Path = MANIFESTS) -> float:
    """Minutes by which ForkcastRolloutPausedTooLong's ``for:`` exceeds the Rollout's longest timed pause."""
    config = load(overlay, manifests)
    (rule,) = [
        r for g in config.rule_groups for r in g["rules"] if r.get("alert") == "ForkcastRolloutPausedTooLong"
    ]
    rollouts = [o for o in manifest_config.render(overlay, manifests) if o["kind"] == "Rollout"]
    pauses = [
        s["pause"].get("duration")
        for r in rollouts
        for s in r["spec"]["strategy"]["canary"]["steps"]
        if "pause" in s
    ]

    def minutes(duration: str | int) -> float:
        value = str(duration)
        unit = {"s": 1 / 60, "m": 1, "h": 60}.get(value[-1], 1 / 60)
        return float(value.rstrip("smh")) * unit

    return minutes(rule["for"]) - max(minutes(p) for p in pauses if p is not None)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_paused_too_long_outlasts_every_timed_pause_step(overlay: str) -> None:
    assert paused_too_long_margin(overlay) > 0


def test_paused_too_long_check_fails_for_a_pause_step_longer_than_n(tmp_path: Path) -> None:
    manifests = scratch_manifests(tmp_path)
    path = manifests.parent / "rollouts" / "inference-rollout.yaml"
    text = path.read_text()
    assert "duration: 5m" in text
    path.write_text(text.replace("duration: 5m", "duration: 45m", 1))
    assert paused_too_long_margin("dev", manifests) == -15


# -- Alertmanager ------------------------------------------------------------------------------------------------


def webhook_host_problems(overlay: str, manifests: Path = MANIFESTS) -> list[str]:
    """Webhooks whose host is not "<service>.<the render's namespace>.svc" (Alertmanager runs elsewhere)."""
    config = load(overlay, manifests)
    problems = []
    for amc in config.alertmanager_configs:
        for receiver in amc["spec"]["receivers"]:
            for hook in receiver.get("webhookConfigs", []):
                host = re.fullmatch(r"http://([^/:]+)(:\d+)?/.*", hook["url"])
                parts = host.group(1).split(".") if host else []
                if len(parts) != 3 or parts[1:] != [config.namespace, "svc"]:
                    problems.append(f"{receiver['name']}: {hook['url']}")
    return problems


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_retrain_webhook_names_the_receiver_in_the_renders_namespace(overlay: str) -> None:
    assert webhook_host_problems(overlay) == []
    (amc,) = load(overlay).alertmanager_configs
    (retrain,) = [r for r in amc["spec"]["receivers"] if r["name"] == "retrain"]
    (hook,) = retrain["webhookConfigs"]
    assert hook["url"].startswith("http://alert-receiver.") and hook["url"].endswith(":9109/alerts")
    assert hook["sendResolved"] is True
    assert hook["httpConfig"]["authorization"] == {
        "type": "Bearer",
        "credentials": {"name": "forkcast-alert-receiver", "key": "token"},
    }
    provided = yaml.safe_load((MANIFESTS / "provided-by-cluster.yaml").read_text())["secrets"]
    assert "token" in provided["forkcast-alert-receiver"]["keys"]


def test_the_webhook_check_fails_without_the_overlays_namespace_replacement(tmp_path: Path) -> None:
    manifests = scratch_manifests(tmp_path)
    edit_yaml(manifests / "overlays" / "dev" / "kustomization.yaml", lambda doc: doc.pop("replacements"))
    assert webhook_host_problems("dev", manifests) == [
        "retrain: http://alert-receiver.NAMESPACE.svc:9109/alerts"
    ]


def retrain_route(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The route of the generated tree that a firing action=retrain alert of forkcast-dev reaches."""
    for ns_route in doc["route"]["routes"]:
        if 'namespace="forkcast-dev"' in ns_route["matchers"]:
            for child in ns_route.get("routes", []):
                if 'action="retrain"' in child.get("matchers", []):
                    return dict(child)
    return None


@pytest.mark.usefixtures("amtool")
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_converted_alertmanager_config_is_valid_and_routes_retrain_to_the_webhook(
    overlay: str, tmp_path: Path
) -> None:
    path = local_alerting.render_alertmanager(tmp_path, "http://127.0.0.1:9/alerts", overlay=overlay)
    result = run("amtool", "check-config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    namespace = load(overlay).namespace
    labels = [f"namespace={namespace}", "action=retrain", "alertname=OnlineAucLow"]
    routed = run("amtool", "config", "routes", "test", f"--config.file={path}", *labels)
    assert routed.stdout.strip() == f"{namespace}/forkcast/retrain", routed.stdout + routed.stderr
    other = run(
        "amtool",
        "config",
        "routes",
        "test",
        f"--config.file={path}",
        f"namespace={namespace}",
        "alertname=TargetDown",
    )
    assert other.stdout.strip() == f"{namespace}/forkcast/notify", other.stdout + other.stderr
    foreign = run(
        "amtool", "config", "routes", "test", f"--config.file={path}", "namespace=shop", "action=retrain"
    )
    assert foreign.stdout.strip() == manifest_config.NULL_RECEIVER, foreign.stdout + foreign.stderr
    doc = yaml.safe_load(path.read_text())
    (hook,) = [h for r in doc["receivers"] for h in r.get("webhook_configs", [])]
    token = Path(hook["http_config"]["authorization"]["credentials_file"])
    assert token.parent == tmp_path and token.read_text().strip()


def test_a_route_removed_from_the_manifests_is_missing_locally(tmp_path: Path) -> None:
    manifests = scratch_manifests(tmp_path)
    edit_yaml(manifests / "base" / "alertmanager-config.yaml", lambda doc: doc["spec"]["route"].pop("routes"))
    out = tmp_path / "out"
    out.mkdir()
    broken = yaml.safe_load(
        local_alerting.render_alertmanager(out, "http://127.0.0.1:9/alerts", manifests=manifests).read_text()
    )
    assert retrain_route(broken) is None
    real = yaml.safe_load(
        local_alerting.render_alertmanager(tmp_path, "http://127.0.0.1:9/alerts").read_text()
    )
    assert retrain_route(real) == {
        "receiver": "forkcast-dev/forkcast/retrain",
        "group_by": ["action"],
        "repeat_interval": "2s",
        "matchers": ['action="retrain"'],
    }
