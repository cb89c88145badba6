"""``up``, ``down``, ``status``: run the rendered overlay on 127.0.0.1, stop exactly what was started, report.

``prepare`` renders the overlay (``manifests/overlays/local`` of ``config.source``, with the model release of the
scratch GitOps clone when the demo promoted one), plans every container (plan.py) and lines the components up in
start order: S3 (SeaweedFS) and MLflow, which a cluster gets from elsewhere, from forkcast_devservers; then the pods of
the render, StatefulSets first; then Alertmanager and Prometheus, configured from the render (observability.py).

State lives in ``.local/state.json``: per component its process (PID + start time: forkcast_devservers.process.Proc),
port (and a pod's other ports, ``NAMED_PORTS``) and a fingerprint of its command line and environment. ``up`` is
idempotent and restartable: a recorded process that is still ours, healthy and unchanged is left alone; a dead one
(crash, reboot, kill) is started again on the same port when it is free; a live one whose command or environment
changed (a newly promoted model, a moved port) is restarted. A component no longer in the render is stopped. ``down``
stops exactly the recorded processes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import shutil
import subprocess
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from forkcast_delivery.render import Render, render

from forkcast_devservers.ports import free_port, port_free
from forkcast_devservers.process import Proc, stop
from forkcast_devservers.ready import wait_until
from forkcast_devservers.servers import Alertmanager, Mlflow, Prometheus, Seaweed, Server
from forkcast_devservers.servers.seaweed import PORT_FLAGS, REGION
from forkcast_local import observability
from forkcast_local.config import PlatformConfig, read_state, write_state
from forkcast_local.local_secrets import LocalSecrets
from forkcast_local.plan import ContainerPlan, Planner, Probe
from forkcast_local.pods import Pod, pod_env, probe_once
from forkcast_monitoring.manifest_config import from_objects, render_observability

Log = Callable[[str], None]
INFRA_BEFORE = ("seaweed", "mlflow")
INFRA_AFTER = ("alertmanager", "prometheus")
SEAWEED_INTERNAL = tuple(flag for flag in PORT_FLAGS if flag != "s3.port")
# How the rendered S3 and MLflow are addressed (the local overlay's S3_ENDPOINT_URL, MLFLOW_TRACKING_URI).
INFRA_HOSTS = {"seaweed": 8333, "mlflow": 5000}
POD_START_TIMEOUT_S = 120.0
# The state key of a pod's ports other than its first ("<workload>.<port name>" -> loopback port).
NAMED_PORTS = "named_ports"


@dataclass
class Component:
    """One thing ``up`` starts: a server of forkcast_devservers or a pod of the plan."""

    name: str
    port: int
    fingerprint: str
    launch: Callable[[], Proc]
    healthy: Callable[[], bool]
    ready: Callable[[], bool] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # kept in the state (seaweed's internal ports)
    # Idempotent set-up run by every `up` once the component is healthy, whether started now or found running
    # (seaweed's buckets: a render that names a new one, such as the lake's, needs it on a weed already up).
    ensure: Callable[[], None] | None = None


@dataclass
class Platform:
    """A prepared run of the overlay: the render, the plans, the components in start order, and the addresses."""

    config: PlatformConfig
    render: Render
    plans: list[ContainerPlan]
    components: list[Component]
    secrets: LocalSecrets
    env: dict[str, str]
    localise: Callable[[str], str]
    # Containers of the render not run here, each "Kind/name container c: why" (plan.Planner.skipped).
    skipped: list[str] = field(default_factory=list)

    def component(self, name: str) -> Component:
        return next(c for c in self.components if c.name == name)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.component(name).port}"

    def plan(self, workload: str) -> ContainerPlan:
        return next(p for p in self.plans if p.workload == workload)

    def client_env(self) -> dict[str, str]:
        """The environment of the CLIs run against the platform (retrain, features): S3 as the inference pod gets
        it, MLflow, and the features Redis as the feature loader's ACL user (Secret forkcast-redis-loader, the one
        a `forkcast-features load` pod mounts in the cluster)."""
        inference = self.plan("inference").env
        keys = ("S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "FORKCAST_BUCKET")
        return {
            **{k: inference[k] for k in keys if k in inference},
            "REDIS_URL": self.localise(self.secrets.value("forkcast-redis-loader", "features-url")),
            "AWS_REGION": REGION,
            "MLFLOW_TRACKING_URI": self.url("mlflow"),
            "MLFLOW_S3_ENDPOINT_URL": inference.get("S3_ENDPOINT_URL", ""),
            "FORKCAST_MODEL_CACHE": str(self.config.component_dir("cache")),
            "FORKCAST_ENVIRONMENT": "local",
        }


def release_file(config: PlatformConfig) -> Path:
    """The overlay's model release in the scratch GitOps clone (what the demo promotes into)."""
    return config.gitops / "manifests" / "overlays" / config.overlay / "model-release.yaml"


def compose(config: PlatformConfig) -> Path:
    """``.local/render/``: ``manifests/`` and ``rollouts/`` of ``config.source``, with the GitOps clone's model
    release of the overlay laid over (Argo CD would deploy the release commit; the rest follows the working tree)."""
    tree = config.root / "render"
    shutil.rmtree(tree, ignore_errors=True)
    for folder in ("manifests", "rollouts"):
        if (config.source / folder).is_dir():
            shutil.copytree(config.source / folder, tree / folder)
    if release_file(config).is_file():
        shutil.copy2(
            release_file(config), tree / "manifests" / "overlays" / config.overlay / "model-release.yaml"
        )
    return tree


def fingerprint(argv: Any, env: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps([list(argv), sorted(env.items())]).encode()).hexdigest()


def _alive(record: dict[str, Any] | None) -> bool:
    return bool(record and record.get("proc")) and Proc.from_dict(record["proc"]).alive()  # type: ignore[index]


class _Ports:
    """The port of each component: where it runs if it is alive, else where it ran if platform.toml still asks for
    the same port (a fallback survives a crash and its dependents need no restart), else the configured one, else
    any free port."""

    def __init__(self, config: PlatformConfig, records: dict[str, Any]) -> None:
        self.config, self.records, self.taken = config, records, set[int]()
        self.picked: dict[str, int] = {}

    def __call__(self, key: str) -> int:
        record = self.records.get(key) or {}
        wanted = self.config.ports.get(key, 0)
        # A pod's second port ("<workload>.<port name>", e.g. the alert receiver's metrics port) has no record of its
        # own: the running pod holds it, so it is the one recorded with that pod. A fresh pick would change the
        # pod's environment and make every `up` restart it (the receiver then forgot which alerts had triggered).
        owner = self.records.get(key.partition(".")[0]) or {}
        held = (owner.get(NAMED_PORTS) or {}).get(key) if "." in key else None
        if held and not record and _alive(owner):
            port = int(held)
        else:
            port = int(record["port"]) if _alive(record) else self._pick(wanted, record)
        self.taken.add(port)
        self.picked[key] = port
        return port

    def _pick(self, wanted: int, record: dict[str, Any]) -> int:
        order = (
            (record.get("port"), wanted) if record.get("wanted") == wanted else (wanted, record.get("port"))
        )
        if record.get("port") and record.get("proc"):
            # It just died: a killed multi-threaded server's PID reads as a zombie before its last thread has closed
            # the listening socket, so give its port a moment to come free.
            with contextlib.suppress(TimeoutError):
                wait_until(partial(port_free, int(record["port"])), timeout_s=3.0, what="port")
        for port in order:
            if port and int(port) not in self.taken and port_free(int(port)):
                return int(port)
        port = free_port()
        while port in self.taken:
            port = free_port()
        return port


def prepare(config: PlatformConfig, state: dict[str, Any] | None = None) -> Platform:
    """Render, plan and line up the components (nothing is started)."""
    state = state if state is not None else read_state(config)
    records: dict[str, Any] = state["components"]
    tree = compose(config)
    overlay_dir = tree / "manifests" / "overlays" / config.overlay
    rendered = render(overlay_dir)
    provided = (yaml.safe_load((tree / "manifests" / "provided-by-cluster.yaml").read_text()) or {}).get(
        "secrets"
    )
    secrets = LocalSecrets(config.secrets_dir, provided or {})
    ports = _Ports(config, records)
    infra = {name: ports(name) for name in (*INFRA_BEFORE, *INFRA_AFTER)}
    planner = Planner(
        render=rendered,
        root=config.source,
        overlay_dir=overlay_dir,
        pods_dir=config.root / "pods",
        secrets=secrets,
        port_for=lambda workload, name, _: ports(
            workload if name == _first_port(rendered, workload) else f"{workload}.{name}"
        ),
        bin_dir=config.bin_dir,
        extra_hosts={"seaweed": {INFRA_HOSTS["seaweed"]: infra["seaweed"]},
                     "mlflow": {INFRA_HOSTS["mlflow"]: infra["mlflow"]}, **config.extra_hosts},
    )  # fmt: skip
    plans = [_override(p, config.env_overrides.get(p.workload)) for p in planner.plans()]
    s3 = plans_env(
        plans, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "FORKCAST_BUCKET", "FORKCAST_LAKE_URI"
    )
    components = _infra_before(config, records, infra, s3)
    for plan in plans:
        if not plan.init:
            # The main container is named after its workload (its port is the workload's in platform.toml).
            main = plan.container == _main(plans, plan)
            inits = [i for i in plans if i.init and i.workload == plan.workload] if main else []
            component = _pod_component(config, plan, inits, plan.workload if main else plan.name)
            if main:  # its pod's second ports, kept in the state with it (_Ports)
                component.extra[NAMED_PORTS] = {
                    k: v for k, v in ports.picked.items() if k.partition(".")[0] == plan.workload and "." in k
                }
            components.append(component)
    components += _infra_after(config, tree, rendered, planner, secrets, infra)
    return Platform(config, rendered, plans, components, secrets, s3, planner.localise, list(planner.skipped))


def _override(plan: ContainerPlan, env: dict[str, str] | None) -> ContainerPlan:
    """``plan`` with ``env`` laid over its rendered environment (``PlatformConfig.env_overrides``); a changed value
    changes the component's fingerprint, so ``up`` restarts it."""
    return dataclasses.replace(plan, env=plan.env | env) if env and not plan.init else plan


def _first_port(rendered: Render, workload: str) -> str:
    for doc in rendered.docs:
        if doc["metadata"]["name"] == workload and "template" in doc.get("spec", {}):
            for container in doc["spec"]["template"]["spec"].get("containers") or []:
                for port in container.get("ports") or []:
                    return str(port.get("name") or port["containerPort"])
    return ""


def plans_env(plans: list[ContainerPlan], *keys: str) -> dict[str, str]:
    """The values of ``keys`` as the pods get them (the first pod that has each)."""
    out: dict[str, str] = {}
    for key in keys:
        out[key] = next((p.env[key] for p in plans if key in p.env), "")
    return out


def _server_component(name: str, server: Server, ensure: Callable[[], None] | None = None) -> Component:
    def launch() -> Proc:
        server.start()
        assert server.proc is not None
        return server.proc

    argv_env = fingerprint(server.argv(), dict(server.env()))
    return Component(name, server.port, argv_env, launch, server.ready, ensure=ensure)


def _infra_before(
    config: PlatformConfig, records: dict[str, Any], infra: dict[str, int], s3: dict[str, str]
) -> list[Component]:
    internal: dict[str, int] = dict((records.get("seaweed") or {}).get("seaweed_ports") or {})
    if not _alive(records.get("seaweed")) and not (
        set(internal) == set(SEAWEED_INTERNAL) and all(port_free(p) for p in internal.values())
    ):
        internal = {}
    seaweed = Seaweed(
        config.component_dir("seaweed"),
        access_key=s3["AWS_ACCESS_KEY_ID"],
        secret_key=s3["AWS_SECRET_ACCESS_KEY"],
        port=infra["seaweed"],
        ports=internal or None,
    )
    # The lake's bucket too (FORKCAST_LAKE_URI, s3://<bucket>/…): the served-log compaction writes there. Made by
    # every `up` (Component.ensure), also on a weed started before the render named the bucket; an existing one is
    # fine (Seaweed.create_bucket takes 409 BucketAlreadyOwnedByYou as done).
    lake = urllib.parse.urlsplit(s3["FORKCAST_LAKE_URI"]).netloc
    buckets = [b for b in (s3["FORKCAST_BUCKET"], config.settings["mlflow_artifacts_bucket"], lake) if b]

    def create_buckets() -> None:
        for bucket in buckets:
            seaweed.create_bucket(bucket)

    weed = _server_component("seaweed", seaweed, create_buckets)
    weed.extra["seaweed_ports"] = {k: v for k, v in seaweed.ports.items() if k != "s3.port"}
    mlflow = Mlflow(
        config.component_dir("mlflow"),
        s3_endpoint=seaweed.endpoint,
        access_key=s3["AWS_ACCESS_KEY_ID"],
        secret_key=s3["AWS_SECRET_ACCESS_KEY"],
        bucket=config.settings["mlflow_artifacts_bucket"],
        port=infra["mlflow"],
    )
    return [weed, _server_component("mlflow", mlflow)]


def _main(plans: list[ContainerPlan], plan: ContainerPlan) -> str:
    """The first (non-init) container of ``plan``'s workload: the one whose start runs the init containers."""
    return next(p.container for p in plans if p.workload == plan.workload and not p.init)


def run_init(config: PlatformConfig, plan: ContainerPlan, timeout_s: float = 60.0) -> None:
    """An init container, to completion: as in Kubernetes, the pod's containers start only once it exited 0
    (https://kubernetes.io/docs/concepts/workloads/pods/init-containers/)."""
    log = config.log_file(plan.workload)
    with log.open("ab") as out:
        done = subprocess.run(
            list(plan.argv),
            env=pod_env(plan),
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout_s,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"init container {plan.name} exited {done.returncode}; see {log}")


def _pod_component(
    config: PlatformConfig, plan: ContainerPlan, inits: list[ContainerPlan], name: str
) -> Component:
    def launch() -> Proc:
        for init in inits:
            run_init(config, init)
        pod = Pod.start(plan, log=config.log_file(name), cwd=config.component_dir(name))
        try:
            pod.wait_live(POD_START_TIMEOUT_S)
        except BaseException:
            pod.terminate()
            raise
        return pod.proc

    def probe(which: Probe | None) -> bool:
        return True if which is None else probe_once(which, pod_env(plan))

    port = next(iter(plan.ports.values()), 0)
    return Component(
        name,
        port,
        fingerprint(
            [plan.argv, *(i.argv for i in inits)],
            plan.env | {f"{i.name}:{k}": v for i in inits for k, v in i.env.items()},
        ),
        launch,
        partial(probe, plan.liveness),
        partial(probe, plan.readiness),
    )


def _infra_after(
    config: PlatformConfig,
    tree: Path,
    rendered: Render,
    planner: Planner,
    secrets: LocalSecrets,
    infra: dict[str, int],
) -> list[Component]:
    monitoring = from_objects(list(rendered.docs), config.overlay, render_observability(tree / "manifests"))
    am_dir, prom_dir = config.component_dir("alertmanager"), config.component_dir("prometheus")
    am_file = observability.alertmanager_config(am_dir, monitoring, secrets, planner.localise, config.speed)
    addresses = {key: f"127.0.0.1:{port}" for key, port in planner.addresses.items()}
    prom_file = observability.prometheus_config(
        prom_dir,
        monitoring,
        tree / "manifests",
        addresses,
        f"127.0.0.1:{infra['alertmanager']}",
        config.speed,
    )
    am = Alertmanager(am_dir, config=am_file, port=infra["alertmanager"])
    prom = Prometheus(prom_dir, config=prom_file, port=infra["prometheus"])
    out = []
    for name, server, path in (("alertmanager", am, am_file), ("prometheus", prom, prom_file)):
        component = _server_component(name, server)
        # A changed generated config (a moved port, a new rule) changes the fingerprint, so `up` restarts it.
        component.fingerprint = fingerprint(
            server.argv(), {"config": hashlib.sha256(path.read_bytes()).hexdigest()}
        )
        out.append(component)
    return out


def ensure_api_key(platform: Platform) -> str:
    """The demo API key in ``.local/api-key`` (SPEC §8); its sha256 is in the gateway's mounted key file."""
    key = platform.secrets.demo_key()
    path = platform.config.api_key_file
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key


def _record(component: Component, proc: Proc, config: PlatformConfig, order: int) -> dict[str, Any]:
    return {
        "proc": proc.to_dict(),
        "log": str(proc.log) if proc.log else None,
        "port": component.port,
        "wanted": config.ports.get(component.name, 0),
        "fingerprint": component.fingerprint,
        "order": order,
        **component.extra,
    }


def up(config: PlatformConfig, log: Log = print, only: set[str] | None = None) -> Platform:
    """Start (or keep) every component in order; returns the prepared platform with the ports in use."""
    state = read_state(config)
    records: dict[str, Any] = state["components"]
    for old in records.values():
        if old.get("proc") and not _alive(
            old
        ):  # crashed: clear what its process group left (children, ports)
            stop(Proc.from_dict(old["proc"]), grace_s=5)
    platform = prepare(config, state)
    ensure_api_key(platform)
    wanted = {c.name for c in platform.components}
    for name in [n for n in records if n not in wanted and (only is None or n in only)]:
        if _alive(records[name]):  # removed from the render: it goes locally too
            stop(Proc.from_dict(records[name]["proc"]))
            log(f"{name:<14} stopped    (no longer in the render)")
        del records[name]
        write_state(config, state)
    for order, component in enumerate(platform.components):
        if only is not None and component.name not in only:
            continue
        record = records.get(component.name)
        if _alive(record):
            assert record is not None
            proc = Proc.from_dict(record["proc"])
            same = record.get("fingerprint") == component.fingerprint
            if same and _healthy_soon(component, proc):
                if component.ensure is not None:
                    component.ensure()
                log(f"{component.name:<14} running    127.0.0.1:{component.port}  pid {proc.pid}")
                continue
            stop(proc)
            why = "changed" if not same else "unhealthy"
            _start(component, config, state, order)
            log(f"{component.name:<14} restarted  127.0.0.1:{component.port}  ({why})")
        else:
            _start(component, config, state, order)
            pid = records[component.name]["proc"]["pid"]
            log(f"{component.name:<14} started    127.0.0.1:{component.port}  pid {pid}")
    return platform


def _healthy_soon(component: Component, proc: Proc) -> bool:
    try:
        wait_until(component.healthy, timeout_s=10, what=component.name, proc=proc)
    except (TimeoutError, RuntimeError):
        return False
    return True


def _start(component: Component, config: PlatformConfig, state: dict[str, Any], order: int) -> None:
    proc = component.launch()
    # The launch waited for health; a launch that failed stopped its process (devservers / Pod) and raised.
    state["components"][component.name] = _record(component, proc, config, order)
    write_state(config, state)
    if component.ensure is not None:
        component.ensure()


def down(config: PlatformConfig, log: Log = print, only: set[str] | None = None) -> None:
    """Stop, in reverse start order, exactly the processes recorded in the state (verified by their start time)."""
    state = read_state(config)
    records: dict[str, Any] = state["components"]
    for name in sorted(records, key=lambda n: int(records[n].get("order", 0)), reverse=True):
        if only is not None and name not in only:
            continue
        record = records[name]
        if not record.get("proc"):
            continue
        proc = Proc.from_dict(record["proc"])
        was_running = proc.alive()
        stop(proc, grace_s=20.0)
        log(f"{name:<14} {'stopped' if was_running else 'was not running'} (pid {proc.pid})")
        # The port and seaweed's internal ports stay on record, so the next `up` reuses them.
        record["proc"] = None
        record["fingerprint"] = ""
        write_state(config, state)


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    url: str
    pid: int | None
    running: bool
    healthy: bool
    ready: bool | None


def status(config: PlatformConfig) -> list[ComponentStatus]:
    """Each component of the render and beside it: address, PID, liveness (its probe) and readiness."""
    return status_of(prepare(config, read_state(config)))


def status_of(platform: Platform) -> list[ComponentStatus]:
    """``status`` of a prepared platform (its ``skipped`` containers are not components)."""
    config = platform.config
    state = read_state(config)
    rows = []
    for component in platform.components:
        record = state["components"].get(component.name)
        running = _alive(record)
        healthy = running and component.healthy()
        ready = component.ready() if running and component.ready else None
        pid = int(record["proc"]["pid"]) if running and record else None
        rows.append(
            ComponentStatus(component.name, f"127.0.0.1:{component.port}", pid, running, healthy, ready)
        )
    return rows
