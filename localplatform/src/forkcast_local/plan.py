"""From the render of an overlay to what runs on 127.0.0.1: one ``ContainerPlan`` per workload container.

The local platform describes nothing itself: ``kubectl kustomize manifests/overlays/local`` (forkcast_delivery.render)
says which workloads exist, what each container runs and with which environment. This module translates each
Deployment / StatefulSet / Rollout container the way the kubelet would start it, with loopback in place of a cluster:

* argv: the container's ``command`` + ``args``, else the image's ENTRYPOINT/CMD (its Dockerfile); a forkcast image
  runs its package's console script from this virtual environment (image -> package -> script through
  forkcast_delivery.workspace), a container whose program is not such a script is an error that names it; a
  third-party image runs the local binary of ``THIRD_PARTY`` (redis -> redis-server, located by forkcast_devservers).
  ``$(VAR)`` references are expanded as Kubernetes does (``expand``).
* env: literals, ``configMapKeyRef``/``secretKeyRef`` and ``envFrom``, ConfigMaps from the render, Secrets from the
  generated files of ``LocalSecrets`` (``.local/secrets/``, mode 0600, never committed).
* volumes: Secret and ConfigMap volumes are written as files, emptyDirs and volume claims made as folders, all
  under ``<pods dir>/<workload>/<mount path>``; every env value and argument that names a mount path is rewritten to
  that folder.
* ports: each containerPort gets a loopback port (``port_for``); an env value or argument equal to a declared
  container port becomes the loopback port, ``0.0.0.0`` becomes ``127.0.0.1``; every Service DNS name (``svc``,
  ``svc.ns``, ``svc.ns.svc``, ``svc.ns.svc.cluster.local``, and ``<pod>.<headless svc>…`` of a StatefulSet) with
  one of its ports becomes ``127.0.0.1:<the selected pod's loopback port>``, as do the names of the infrastructure
  the platform runs beside the render (``extra_hosts``: seaweed, mlflow…).
* probes (readiness, liveness) and ``terminationGracePeriodSeconds``.

One pod per workload runs locally, whatever its replicas (the canary rehearsal reads replicas from the render).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from forkcast_delivery import workspace
from forkcast_delivery.objects import PodTemplate, matches_plain, of_kind, pod_templates, ref, resolve_port
from forkcast_delivery.render import Render

from forkcast_devservers.binaries import REDIS_SERVER, Binary, MissingBinaryError, locate
from forkcast_local.local_secrets import LocalSecrets

# The workload kinds that run pods locally (Jobs and CronJobs are run by the drills that need them).
RUN_KINDS = ("Deployment", "StatefulSet", "Rollout")
# Rendered kinds that are no long-running pod: not started by `up`, and listed by `status` as not run locally (a
# CronJob's command is run by hand or by a drill when wanted, e.g. `forkcast-lake maintain`).
SCHEDULED_KINDS = ("CronJob",)
LOOPBACK = "127.0.0.1"
# Kubernetes' default grace: https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/
# ("terminationGracePeriodSeconds ... Defaults to 30 seconds").
DEFAULT_GRACE_S = 30.0


class PlanError(RuntimeError):
    """The render holds something the local platform cannot run; the message names the object and why."""


@dataclass(frozen=True)
class Probe:
    """A readiness or liveness probe of a container, at its loopback port.

    Defaults as in the Kubernetes Probe reference (periodSeconds 10, failureThreshold 3, initialDelaySeconds 0,
    timeoutSeconds 1): https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/#Probe
    """

    path: str | None
    port: int
    period_s: float
    failure_threshold: int
    initial_delay_s: float
    kind: Literal["http", "tcp", "exec"]
    command: tuple[str, ...] = ()
    timeout_s: float = 1.0


@dataclass(frozen=True)
class ContainerPlan:
    """One container of one workload as it runs on loopback: what ``pods.Pod.start`` needs and nothing else."""

    workload: str
    container: str
    argv: tuple[str, ...]
    env: dict[str, str]
    ports: dict[str, int]
    readiness: Probe | None
    liveness: Probe | None
    termination_grace_s: float
    # An init container: run to completion, in order, before the pod's containers start.
    init: bool = False

    @property
    def name(self) -> str:
        """The component name: the workload's, or ``workload/container`` for a pod of several containers."""
        return self.workload if self.container == self.workload else f"{self.workload}/{self.container}"


@dataclass(frozen=True)
class ThirdParty:
    """How a third-party image runs locally: its binary, and the arguments that make it listen on loopback."""

    binary: Binary
    # Appended after the container's own arguments ({port}: the loopback port of its first container port).
    listen: tuple[str, ...]
    # Leading words of the image's entrypoint that the local binary replaces.
    entrypoint: tuple[str, ...] = ()
    # A sidecar that may be missing locally (its binary is not installed): left out, and said so (``skipped``).
    optional: bool = False


# The official redis image runs redis-server with the container's args when the first one is a flag or a .conf
# file (https://github.com/docker-library/redis/blob/master/docker-entrypoint.sh); later flags win, as in redis.conf.
THIRD_PARTY: dict[str, ThirdParty] = {
    # The program the image names is the one forkcast_devservers runs (REDIS_SERVER.names).
    "redis": ThirdParty(REDIS_SERVER, ("--bind", LOOPBACK, "--port", "{port}"), REDIS_SERVER.names),
    # The metrics sidecar of the Redis pods, when an upstream redis_exporter (oliver006/redis_exporter, the rendered
    # image's v1.88.0) is on PATH. Debian 12's prometheus-redis-exporter (1.45.0-2+b4, `apt-cache show`) is not
    # used: its --help has --config-command, --redis.user and --redis-only-metrics but not the rendered
    # --exclude-latency-histogram-metrics and --disable-scrape-endpoint, so it would exit on unknown flags.
    "redis_exporter": ThirdParty(
        Binary(
            ("redis_exporter",),
            "an upstream redis_exporter >= the rendered image's (Debian 12's prometheus-redis-exporter 1.45 lacks "
            "the rendered --exclude-latency-histogram-metrics and --disable-scrape-endpoint)",
        ),
        ("--web.listen-address=127.0.0.1:{port}",),
        optional=True,
    ),
}
# Programs a third-party image's command may name that run here as they are (an init container's shell script).
SHELLS = ("sh", "bash")

PortFor = Callable[[str, str, int], int]


def expand(text: str, env: Mapping[str, str]) -> str:
    """``$(VAR)`` expanded from ``env`` as Kubernetes expands command, args and env values: an unknown reference
    is left unchanged and ``$$`` escapes a ``$`` ("Variable references $(VAR_NAME) are expanded using the previously
    defined environment variables in the container ... If a variable cannot be resolved, the reference in the input
    string will be unchanged. Double $$ are reduced to a single $, which allows for escaping the $(VAR_NAME)
    syntax", https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/#entrypoint)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("$(", i) and (end := text.find(")", i + 2)) != -1:
            name = text[i + 2 : end]
            out.append(env[name] if name in env else text[i : end + 1])
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


@dataclass
class _Pod:
    """A workload's pod template with the loopback port of each declared container port."""

    template: PodTemplate
    ports: dict[tuple[str, int], int] = field(default_factory=dict)  # (container, containerPort) -> loopback

    @property
    def workload(self) -> str:
        return str(self.template.owner["metadata"]["name"])


@dataclass
class Planner:
    """Builds the plans of one render. ``root`` is the workspace (packages, console scripts in ``bin_dir``),
    ``overlay_dir`` the rendered overlay (its ``images:`` entries), ``pods_dir`` where volumes are materialised."""

    render: Render
    root: Path
    overlay_dir: Path
    pods_dir: Path
    secrets: LocalSecrets
    port_for: PortFor
    bin_dir: Path
    extra_hosts: Mapping[str, Mapping[int, int]] = field(default_factory=dict)
    # Filled by ``plans``: DNS name -> {port -> loopback port}, and (workload, container port) -> loopback port.
    hosts: dict[str, dict[int, int]] = field(default_factory=dict, init=False)
    # Containers left out (optional sidecars whose program is not installed): "Kind/name container c: why".
    skipped: list[str] = field(default_factory=list, init=False)
    addresses: dict[tuple[str, int], int] = field(default_factory=dict, init=False)

    def localise(self, value: str) -> str:
        """A URL or address of the cluster (a Service name and port) as its loopback address (after ``plans``)."""
        return _localise(value, {}, self.hosts, {}, exact_port=False)

    def plans(self) -> list[ContainerPlan]:
        """Every container of every workload, StatefulSets first (the stores others connect to), then the rest
        in render order."""
        pods = [_Pod(t) for t in pod_templates(self.render.docs) if t.owner["kind"] in RUN_KINDS]
        pods.sort(key=lambda p: p.template.owner["kind"] != "StatefulSet")
        for pod in pods:
            for container, port in pod.template.ports():
                number = int(port["containerPort"])
                name = str(port.get("name") or number)
                pod.ports[(str(container["name"]), number)] = self.port_for(pod.workload, name, number)
        hosts = self.hosts = self._hosts(pods)
        self.addresses = {(p.workload, cp): lp for p in pods for (_, cp), lp in p.ports.items()}
        for job in of_kind(self.render.docs, *SCHEDULED_KINDS):
            template = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
            commands = "; ".join(" ".join(c.get("command") or []) for c in template.get("containers") or [])
            self.skipped.append(
                f"{ref(job)}: scheduled ({job['spec']['schedule']}), not a long-running pod; run `{commands}` "
                "by hand when wanted"
            )
        out = []
        for pod in pods:
            out += [
                self._plan(pod, dict(i), hosts, init=True)
                for i in pod.template.spec.get("initContainers") or []
            ]
            for container in pod.template.spec.get("containers") or []:
                plan = self._plan(pod, dict(container), hosts)
                if plan is not None:
                    out.append(plan)
                else:  # a skipped sidecar's ports answer nothing here: no scrape target for them
                    for port in container.get("ports") or []:
                        self.addresses.pop((pod.workload, int(port["containerPort"])), None)
        return [p for p in out if p is not None]

    # --- Service names -----------------------------------------------------------------------------------

    def _hosts(self, pods: list[_Pod]) -> dict[str, dict[int, int]]:
        """DNS name -> {port the name is called on -> loopback port}, for every Service and extra host."""
        ns = self.render.namespace
        hosts: dict[str, dict[int, int]] = {h: dict(p) for h, p in self.extra_hosts.items()}
        for svc in of_kind(self.render.docs, "Service"):
            name = str(svc["metadata"]["name"])
            selected = [p for p in pods if matches_plain(svc["spec"].get("selector"), p.template.labels)]
            if not selected:
                continue
            pod = selected[0]  # one pod per workload locally: the first selected one answers
            mapping: dict[int, int] = {}
            for port in svc["spec"].get("ports") or []:
                target = port.get("targetPort", port["port"])
                number = resolve_port(pod.template, target, port.get("protocol", "TCP"))
                local = next((lp for (_, cp), lp in pod.ports.items() if cp == number), None)
                if local is not None:
                    mapping[int(port["port"])] = local
            # A StatefulSet's pod 0 also has the stable name <pod>.<its headless Service>.
            names = [name] + [
                f"{pod.workload}-0.{name}"
                for sts in of_kind(self.render.docs, "StatefulSet")
                if sts["spec"].get("serviceName") == name and sts["metadata"]["name"] == pod.workload
            ]
            for base in names:
                for full in (base, f"{base}.{ns}", f"{base}.{ns}.svc", f"{base}.{ns}.svc.cluster.local"):
                    hosts[full] = mapping
        return hosts

    # --- one container ------------------------------------------------------------------------------------

    def _plan(
        self, pod: _Pod, container: dict[str, Any], hosts: dict[str, dict[int, int]], *, init: bool = False
    ) -> ContainerPlan | None:
        workload, cname = pod.workload, str(container["name"])
        where = f"{ref(pod.template.owner)} container {cname}"
        party = THIRD_PARTY.get(workspace.repository(str(container.get("image", ""))).rsplit("/", 1)[-1])
        if party is not None and party.optional:
            try:
                locate(party.binary)
            except MissingBinaryError as exc:
                self.skipped.append(f"{where}: {exc}")
                return None
        mounts = self._volumes(pod, container, where)
        own_ports = {cp: lp for (c, cp), lp in pod.ports.items() if c == cname}
        raw = self._env(container, where)
        env = {k: _localise(v, mounts, hosts, own_ports, exact_port=True) for k, v in raw.items()}
        argv = [
            _localise(expand(a, env), mounts, hosts, own_ports, exact_port=True)
            for a in self._argv(container, where)
        ]
        readiness = self._probe(pod, container, "readinessProbe", env)
        liveness = self._probe(pod, container, "livenessProbe", env)
        if argv and argv[0] in THIRD_PARTY_MARKERS:
            # An exec probe runs inside the container, where the program listens on its declared port; here the
            # port moved, so a third-party image's exec probe becomes a TCP probe of the loopback port.
            readiness, liveness = (_tcp_instead(p, own_ports) for p in (readiness, liveness))
            party = THIRD_PARTY_MARKERS[argv[0]]
            first = next(iter(own_ports.values()), 0)
            argv = [locate(party.binary), *argv[1:], *(a.format(port=first) for a in party.listen)]
        names = {
            str(p.get("name") or p["containerPort"]): int(p["containerPort"]) for _, p in _ports_of(container)
        }
        ports = {name: own_ports[number] for name, number in names.items()}
        grace = pod.template.spec.get("terminationGracePeriodSeconds")
        return ContainerPlan(
            workload=workload,
            container=cname,
            argv=tuple(argv),
            env=env,
            ports=ports,
            readiness=readiness,
            liveness=liveness,
            termination_grace_s=float(DEFAULT_GRACE_S if grace is None else grace),
            init=init,
        )

    def _argv(self, container: dict[str, Any], where: str) -> list[str]:
        """command + args, else the image's ENTRYPOINT/CMD, as Kubernetes combines them
        (https://kubernetes.io/docs/tasks/inject-data-application/define-command-argument-container/#notes)."""
        image = str(container.get("image", ""))
        repo = workspace.repository(image)
        package = self._packages.get(self._images.get(repo, repo))
        if package is None:
            party = THIRD_PARTY.get(repo.rsplit("/", 1)[-1])
            if party is None:
                raise PlanError(f"{where}: image {image!r} is neither a workspace package nor in THIRD_PARTY")
            argv = [str(a) for a in (container.get("command") or [])] + [
                str(a) for a in container.get("args") or []
            ]
            if argv and argv[0] in SHELLS:  # e.g. the Redis pods' init container, a shell script
                found = shutil.which(argv[0])
                if found is None:
                    raise PlanError(f"{where}: {argv[0]} not found on PATH")
                return [found, *argv[1:]]
            if (
                argv
                and not argv[0].startswith("-")
                and argv[0] not in party.entrypoint
                and not argv[0].startswith("/")
            ):
                raise PlanError(f"{where} runs {argv[0]!r}, which {image!r} does not run locally")
            while argv and argv[0] in party.entrypoint:
                argv = argv[1:]
            return [f"<third-party:{repo.rsplit('/', 1)[-1]}>", *argv]
        built = workspace.read_dockerfile(package.dockerfile) if package.dockerfile.exists() else None
        command = [str(a) for a in container.get("command") or []]
        args = [str(a) for a in container.get("args") or []]
        if command:
            argv = command + args
        elif built is not None:
            argv = list(built.entrypoint) + (args or list(built.cmd))
        else:
            argv = args
        program = argv[0].rsplit("/", 1)[-1] if argv else ""
        if program not in package.scripts:
            scripts = ", ".join(sorted(package.scripts)) or "it has none"
            raise PlanError(f"{where} runs {program!r}, not a console script of {package.name} ({scripts})")
        return [str(self.bin_dir / program), *argv[1:]]

    def _env(self, container: dict[str, Any], where: str) -> dict[str, str]:
        """The environment as the kubelet builds it: envFrom in order, then env in order (env wins), each env value
        expanded against the variables defined before it."""
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            prefix = str(source.get("prefix", ""))
            if "configMapRef" in source:
                ref_ = source["configMapRef"]
                data = self._configmap(ref_["name"], where, optional=bool(ref_.get("optional")))
            else:
                ref_ = source["secretRef"]
                data = self._secret(ref_["name"])
            env |= {prefix + k: v for k, v in data.items()}
        for var in container.get("env") or []:
            value_from = var.get("valueFrom")
            if value_from is None:
                env[var["name"]] = expand(str(var.get("value", "")), env)
            elif "configMapKeyRef" in value_from:
                r = value_from["configMapKeyRef"]
                data = self._configmap(r["name"], where, optional=bool(r.get("optional")))
                if r["key"] in data:
                    env[var["name"]] = data[r["key"]]
                elif not r.get("optional"):
                    raise PlanError(f"{where}: ConfigMap {r['name']} has no key {r['key']}")
            elif "secretKeyRef" in value_from:
                r = value_from["secretKeyRef"]
                env[var["name"]] = self.secrets.value(r["name"], r["key"])
            else:
                raise PlanError(f"{where}: env {var['name']} uses {sorted(value_from)}, not known locally")
        return env

    def _configmap(self, name: str, where: str, *, optional: bool = False) -> dict[str, str]:
        for doc in of_kind(self.render.docs, "ConfigMap"):
            if doc["metadata"]["name"] == name:
                return {str(k): str(v) for k, v in (doc.get("data") or {}).items()}
        if optional:
            return {}
        raise PlanError(f"{where}: ConfigMap {name} is not in the render")

    def _secret(self, name: str) -> dict[str, str]:
        """A Secret's data: rendered (a generated Secret), else the local values of every key the cluster provides."""
        for doc in of_kind(self.render.docs, "Secret"):
            if doc["metadata"]["name"] == name:
                data = {k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()}
                return data | {k: str(v) for k, v in (doc.get("stringData") or {}).items()}
        return {key: self.secrets.value(name, key) for key in self.secrets.keys(name)}

    def _volumes(self, pod: _Pod, container: dict[str, Any], where: str) -> dict[str, Path]:
        """Materialise the container's mounts under ``pods_dir/<workload>/``; returns mount path -> local path."""
        volumes = {v["name"]: v for v in pod.template.spec.get("volumes") or []}
        claims = {c["metadata"]["name"] for c in pod.template.owner["spec"].get("volumeClaimTemplates") or []}
        mounts: dict[str, Path] = {}
        configs: list[
            tuple[Path, str]
        ] = []  # ConfigMap files, written once every mount's local path is known
        for mount in container.get("volumeMounts") or []:
            path = str(mount["mountPath"])
            local = self.pods_dir / pod.workload / path.lstrip("/")
            volume = volumes.get(mount["name"])
            if volume is None and mount["name"] not in claims:
                raise PlanError(f"{where}: volumeMount {mount['name']} names no volume of the pod")
            files: dict[str, str] | None = None
            if volume is not None and "secret" in volume:
                data = self._secret(volume["secret"]["secretName"])
                files = _items(data, volume["secret"].get("items"))
            elif volume is not None and "configMap" in volume:
                data = self._configmap(volume["configMap"]["name"], where)
                files = _items(data, volume["configMap"].get("items"))
            is_config = volume is not None and "configMap" in volume
            if files is None:  # emptyDir, a volume claim
                local.mkdir(parents=True, exist_ok=True)
            elif mount.get("subPath"):
                (
                    configs.append((local, files[mount["subPath"]]))
                    if is_config
                    else _write(local, files[mount["subPath"]])
                )
            else:
                for rel, text in files.items():
                    (configs.append((local / rel, text)) if is_config else _write(local / rel, text))
            mounts[path] = local
        # A configuration file names the pod's paths (redis.conf: ``dir /data``, ``aclfile /etc/redis/acl/…``):
        # they are rewritten like env values and arguments.
        for target, text in configs:
            _write(target, _paths_in_text(text, mounts))
        return mounts

    def _probe(
        self, pod: _Pod, container: dict[str, Any], which: str, env: Mapping[str, str]
    ) -> Probe | None:
        spec = container.get(which)
        if not spec:
            return None
        cname = str(container["name"])

        def local_port(port: int | str) -> int:
            number = resolve_port(pod.template, port)
            if number is None or (cname, number) not in pod.ports:
                raise PlanError(
                    f"{ref(pod.template.owner)} container {cname}: {which} port {port} is not declared"
                )
            return pod.ports[(cname, number)]

        common = {
            "period_s": float(spec.get("periodSeconds", 10)),
            "failure_threshold": int(spec.get("failureThreshold", 3)),
            "initial_delay_s": float(spec.get("initialDelaySeconds", 0)),
            "timeout_s": float(spec.get("timeoutSeconds", 1)),
        }
        if "httpGet" in spec:
            http = spec["httpGet"]
            return Probe(str(http.get("path", "/")), local_port(http["port"]), kind="http", **common)  # type: ignore[arg-type]
        if "tcpSocket" in spec:
            return Probe(None, local_port(spec["tcpSocket"]["port"]), kind="tcp", **common)  # type: ignore[arg-type]
        if "exec" in spec:
            command = tuple(str(a) for a in spec["exec"]["command"])
            return Probe(None, 0, kind="exec", command=command, **common)  # type: ignore[arg-type]
        raise PlanError(
            f"{ref(pod.template.owner)} container {cname}: {which} of an unknown kind {sorted(spec)}"
        )

    @property
    def _packages(self) -> dict[str, workspace.Package]:
        return workspace.packages(self.root)

    @property
    def _images(self) -> dict[str, str]:
        return workspace.image_names(self.overlay_dir)


THIRD_PARTY_MARKERS = {f"<third-party:{name}>": party for name, party in THIRD_PARTY.items()}


def _tcp_instead(probe: Probe | None, own_ports: Mapping[int, int]) -> Probe | None:
    if probe is None or probe.kind != "exec":
        return probe
    port = next(iter(own_ports.values()))
    return Probe(
        None, port, probe.period_s, probe.failure_threshold, probe.initial_delay_s, "tcp", (), probe.timeout_s
    )


def _ports_of(container: Mapping[str, Any]) -> Iterator[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    for port in container.get("ports") or []:
        yield container, port


def _items(data: Mapping[str, str], items: list[dict[str, Any]] | None) -> dict[str, str]:
    """The files of a Secret/ConfigMap volume: every key, or only the listed ``items`` at their paths."""
    if not items:
        return dict(data)
    return {str(i["path"]): data[i["key"]] for i in items}


def _write(path: Path, text: str) -> None:
    """A secret or config file readable by its owner only (the pods run as this user)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    path.chmod(0o600)


def _paths_in_text(text: str, mounts: Mapping[str, Path]) -> str:
    """Every mount path in ``text`` (as a whole path or a path's prefix) replaced by its local folder."""
    if not mounts:
        return text
    names = "|".join(re.escape(m.rstrip("/")) for m in sorted(mounts, key=len, reverse=True))
    pattern = re.compile(r"(?<![\w/.-])(" + names + r")(?=/|\s|$|[\"'])")
    return pattern.sub(lambda m: str(mounts.get(m.group(1)) or mounts[m.group(1) + "/"]), text)


def _host_pattern(hosts: Mapping[str, Mapping[int, int]]) -> re.Pattern[str] | None:
    names = sorted(hosts, key=len, reverse=True)
    if not names:
        return None
    return re.compile(
        r"(?<![\w.-])(" + "|".join(re.escape(n) for n in names) + r")(?::(\d+))?(?![\w-]|\.[a-z])"
    )


def _localise(
    value: str,
    mounts: Mapping[str, Path],
    hosts: Mapping[str, Mapping[int, int]],
    own_ports: Mapping[int, int],
    *,
    exact_port: bool,
) -> str:
    """One env value or argument with cluster addresses replaced by local ones (see the module docstring)."""
    for path in sorted(mounts, key=len, reverse=True):
        if value == path or value.startswith(path.rstrip("/") + "/"):
            return str(mounts[path]) + value[len(path.rstrip("/")) :]
    if value in ("0.0.0.0", "::"):
        return LOOPBACK
    if exact_port and value.isdigit() and int(value) in own_ports:
        return str(own_ports[int(value)])
    pattern = _host_pattern(hosts)
    if pattern is None:
        return value

    def swap(m: re.Match[str]) -> str:
        mapping = hosts[m.group(1)]
        rest = value[m.end() :]
        if rest.startswith("@") or (m.group(2) is None and rest[:1] not in ("", "/", "?", "#")):
            return m.group(0)  # a URL's user (``redis://gateway:password@redis…``), not its host
        if m.group(2) is not None:
            local = mapping.get(int(m.group(2)))
            return f"{LOOPBACK}:{local}" if local is not None else m.group(0)
        # No port: only a URL's host (after ``//`` or ``user@``) is an address; then the scheme's default (80)
        # when the Service has it, else its only port. A bare word equal to a Service name stays as it is.
        if not value[: m.start()].endswith(("//", "@")):
            return m.group(0)
        local = (
            mapping.get(80)
            if 80 in mapping
            else (next(iter(mapping.values())) if len(mapping) == 1 else None)
        )
        return f"{LOOPBACK}:{local}" if local is not None else m.group(0)

    # ``dns+http://<headless Service>`` asks the gateway to resolve every pod's address; on loopback there is one
    # address, which is no DNS name (dnspython does not resolve an IP literal), so the URL is given as it is.
    return re.sub(r"\bdns\+(https?://127\.0\.0\.1[:/])", r"\1", pattern.sub(swap, value))
