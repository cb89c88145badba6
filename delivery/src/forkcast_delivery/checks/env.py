"""Every forkcast container gets the environment its settings classes require, and sets no FORKCAST_ variable
they do not read.

The pod's environment is resolved from the render the way the kubelet builds it (env literals, envFrom and
valueFrom of ConfigMaps; Secret values stand in as placeholders, since only their presence matters here), then
each settings class of the program the container runs is built from exactly that environment. The classes
refuse development defaults outside ``environment=local`` (forkcast_contract.settings), so a production pod
missing, say, FORKCAST_API_KEYS_FILE fails here, not at start in the cluster. A FORKCAST_ variable set in a
container's own ``env`` that no class reads is a typo or a leftover, and is reported too; so is a program that the
settings make listen on a port the container does not declare, or on loopback.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from pydantic import ValidationError
from pydantic_settings import BaseSettings

from forkcast_delivery.checks.problem import Problem
from forkcast_delivery.context import Context
from forkcast_delivery.objects import of_kind

RULE = "env"
PREFIX = "FORKCAST_"
# The settings classes each console script builds (module:Class), first its own, then what it uses beside.
SETTINGS: dict[str, tuple[str, ...]] = {
    "forkcast-gateway": ("forkcast_gateway.settings:GatewaySettings",),
    "forkcast-inference": (
        "forkcast_inference.settings:InferenceSettings",
        "forkcast_registry.settings:RegistrySettings",
    ),
    "forkcast-online-auc": ("forkcast_monitoring.settings:MonitoringSettings",),
    "forkcast-drift": (
        "forkcast_monitoring.settings:DriftSettings",
        "forkcast_registry.settings:RegistrySettings",
    ),
    "forkcast-alert-receiver": ("forkcast_monitoring.settings:ReceiverSettings",),
    # The lake's long-running workload is `forkcast-lake compact` (manifests/base/lake-compact.yaml).
    "forkcast-lake": ("forkcast_lake.compact_settings:CompactSettings",),
}


def settings_class(path: str) -> type[BaseSettings]:
    module, name = path.split(":")
    cls: type[BaseSettings] = getattr(importlib.import_module(module), name)
    return cls


def env_names(cls: type[BaseSettings]) -> set[str]:
    """The variable names a settings class reads (upper case; aliases included)."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    names = set()
    for field_name, info in cls.model_fields.items():
        alias = info.validation_alias
        if alias is None:
            names.add((prefix + field_name).upper())
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:  # AliasChoices
            names |= {str(choice).upper() for choice in getattr(alias, "choices", [])}
    return names


def pod_env(ctx: Context, container: Mapping[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom first, then env (env wins)."""
    configmaps = {d["metadata"]["name"]: d.get("data") or {} for d in of_kind(ctx.docs, "ConfigMap")}
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            env |= {k: str(v) for k, v in configmaps.get(source["configMapRef"]["name"], {}).items()}
        if "secretRef" in source:
            name = source["secretRef"]["name"]
            keys = ((ctx.provided.get("secrets") or {}).get(name) or {}).get("keys") or []
            env |= {k: f"<secret {name}/{k}>" for k in keys}
    for var in container.get("env") or []:
        value_from = var.get("valueFrom")
        if value_from is None:
            env[var["name"]] = str(var.get("value", ""))
        elif "configMapKeyRef" in value_from:
            r = value_from["configMapKeyRef"]
            if r["key"] in configmaps.get(r["name"], {}):
                env[var["name"]] = str(configmaps[r["name"]][r["key"]])
        elif "secretKeyRef" in value_from:
            r = value_from["secretKeyRef"]
            env[var["name"]] = f"<secret {r['name']}/{r['key']}>"
        else:  # fieldRef / resourceFieldRef: known only in a running pod
            env[var["name"]] = "0"
    return env


@contextmanager
def exactly(env: Mapping[str, str]) -> Iterator[None]:
    """os.environ holding exactly ``env`` for the duration (settings classes read os.environ)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


# Settings fields that say where a program listens: (host field, port field).
LISTEN_FIELDS = (("host", "port"), ("metrics_host", "metrics_port"))


def _listening(settings: BaseSettings, container: Mapping[str, Any]) -> list[str]:
    """Where the settings make the program listen, against the container's declared ports: a port the pod does
    not declare gets no Service or monitor traffic, and a loopback bind is unreachable from outside the pod."""
    declared = {int(p["containerPort"]) for p in container.get("ports") or []}
    found = []
    for host_field, port_field in LISTEN_FIELDS:
        port, host = getattr(settings, port_field, None), getattr(settings, host_field, None)
        if not isinstance(port, int):
            continue
        if port not in declared:
            found.append(f"listens on {port} ({port_field}), which the container does not declare")
        if isinstance(host, str) and host.startswith("127."):
            found.append(f"binds {host} ({host_field}): unreachable from outside the pod")
    return found


def _reasons(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors())


def check(ctx: Context) -> list[Problem]:
    problems = []
    for template in ctx.templates:
        for container in template.containers():
            program = ctx.program_of(dict(container))
            if program is None:
                continue
            where = f"container {container['name']} ({program})"
            if program not in SETTINGS:
                problems.append(
                    Problem(
                        RULE,
                        template.name,
                        f"{where}: no settings class known (forkcast_delivery.checks.env)",
                    )
                )
                continue
            classes = [settings_class(path) for path in SETTINGS[program]]
            env = pod_env(ctx, container)
            with exactly(env):
                for cls in classes:
                    try:
                        settings = cls()
                    except ValidationError as exc:
                        problems.append(
                            Problem(RULE, template.name, f"{where}: {cls.__name__}: {_reasons(exc)}")
                        )
                        continue
                    problems += [
                        Problem(RULE, template.name, f"{where}: {cls.__name__} {reason}")
                        for reason in _listening(settings, container)
                    ]
            read = set().union(*(env_names(cls) for cls in classes))
            for var in container.get("env") or []:
                name = var["name"]
                if name.upper().startswith(PREFIX) and name.upper() not in read:
                    problems.append(
                        Problem(
                            RULE, template.name, f"{where}: sets {name}, which no settings class of it reads"
                        )
                    )
    return problems
