"""``up``, ``down``, ``status``: start the component table in order, stop exactly what was started, report.

State lives in ``.local/state.json``: per component its PID, process start time, port and a fingerprint of its
command line and environment. ``up`` is idempotent and restartable: a recorded process that is still ours, healthy
and unchanged is left alone; a dead one (crash, reboot, kill) is started again on the same port when it is free; a
live one whose command or environment changed (a newly promoted model, a moved port) is restarted.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from forkcast_gateway.auth import hash_key
from forkcast_local.components import SEAWEED_INTERNAL_FLAGS, Component, Context
from forkcast_local.config import PlatformConfig, free_port, local_secret, port_free, read_state, write_state
from forkcast_local.health import wait_until
from forkcast_local.procs import is_ours, spawn, stop
from forkcast_local.table import COMPONENTS

DEMO_KEY_ID = "local-demo"
Log = Callable[[str], None]


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    url: str
    pid: int | None
    running: bool
    healthy: bool
    ready: bool | None


def ensure_api_key(config: PlatformConfig) -> str:
    """The demo API key in ``.local/api-key`` and its sha256 in the gateway's keys file (SPEC §8)."""
    key = "fk-" + local_secret(config, "api-key-value")
    config.api_key_file.write_text(key + "\n")
    config.api_key_file.chmod(0o600)
    config.keys_file.parent.mkdir(parents=True, exist_ok=True)
    config.keys_file.write_text(f"{DEMO_KEY_ID}:{hash_key(key)}\n")
    return key


def _alive(record: dict[str, Any] | None) -> bool:
    return bool(record) and is_ours(int(record.get("pid", 0)), int(record.get("start_time", 0)))  # type: ignore[union-attr]


def _pick_port(wanted: int, record: dict[str, Any] | None, taken: set[int]) -> int:
    """The port a (re)started component gets: where it ran last time if platform.toml still asks for the same
    port (so a fallback port survives a crash and its dependents need no restart), else the configured one, else
    any free port."""
    record = record or {}
    order = (record.get("port"), wanted) if record.get("wanted") == wanted else (wanted, record.get("port"))
    if record.get("port") and record.get("start_time"):
        # It just died: a killed multi-threaded server's PID reads as a zombie before its last thread has closed
        # the listening socket, so give its port a moment to come free.
        wait_until(partial(port_free, int(record["port"])), 3.0, lambda: True)
    for port in order:
        if port and port not in taken and port_free(int(port)):
            return int(port)
    port = free_port()
    while port in taken:
        port = free_port()
    return port


def context(config: PlatformConfig, state: dict[str, Any]) -> Context:
    """The ports of this start: a live component keeps its port; a dead one gets the configured one if free."""
    records: dict[str, Any] = state["components"]
    ports: dict[str, int] = {}
    for component in COMPONENTS:
        record = records.get(component.name)
        if record is not None and _alive(record):
            ports[component.name] = int(record["port"])
    for component in COMPONENTS:
        if component.name not in ports:
            wanted = config.ports[component.name]
            ports[component.name] = _pick_port(wanted, records.get(component.name), set(ports.values()))
    seaweed = records.get("seaweed") or {}
    internal: dict[str, int] = dict(seaweed.get("seaweed_ports") or {})
    complete = set(internal) == set(SEAWEED_INTERNAL_FLAGS)
    if not _alive(seaweed) and not (complete and all(port_free(p) for p in internal.values())):
        taken = set(ports.values())
        internal = {}
        for flag in SEAWEED_INTERNAL_FLAGS:
            internal[flag] = _pick_port(0, None, taken)
            taken.add(internal[flag])
    return Context(config, ports, internal)


def _fingerprint(argv: list[str], env: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps([argv, sorted(env.items())]).encode()).hexdigest()


def _log_tail(config: PlatformConfig, name: str, lines: int = 15) -> str:
    path = config.log_file(name)
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else ""


def _start(
    component: Component, ctx: Context, state: dict[str, Any], argv: list[str], env: dict[str, str]
) -> None:
    config = ctx.config
    log = config.log_file(component.name)
    pid, started = spawn(argv, {**os.environ, **env}, config.component_dir(component.name), log)
    record: dict[str, Any] = {"pid": pid, "start_time": started, "port": ctx.ports[component.name]}
    record["wanted"] = config.ports[component.name]
    record["fingerprint"] = _fingerprint(argv, env)
    if component.name == "seaweed":
        record["seaweed_ports"] = ctx.seaweed_ports
    state["components"][component.name] = record
    write_state(
        config, state
    )  # recorded before the health wait, so `down` can stop it even if it never answers
    if not wait_until(
        lambda: component.health(ctx), component.startup_timeout_s, lambda: is_ours(pid, started)
    ):
        raise RuntimeError(
            f"{component.name} did not become healthy on {ctx.url(component.name)}; last lines of {log}:\n"
            + _log_tail(config, component.name)
        )
    if component.after_start:
        component.after_start(ctx)


def up(config: PlatformConfig, log: Log = print, only: set[str] | None = None) -> Context:
    """Start (or keep) every component in order; returns the context with the ports in use."""
    state = read_state(config)
    ensure_api_key(config)
    for old in state["components"].values():
        if not _alive(old):  # crashed: first clear what its process group left (children holding its port)
            stop(int(old.get("pid", 0)), int(old.get("start_time", 0)), timeout_s=5)
    ctx = context(config, state)
    for component in COMPONENTS:
        if only is not None and component.name not in only:
            continue
        argv, env = component.argv(ctx), component.env(ctx)
        record: dict[str, Any] | None = state["components"].get(component.name)
        if record is not None and _alive(record):
            same = record["fingerprint"] == _fingerprint(argv, env)
            pid, started = int(record["pid"]), int(record["start_time"])
            if same and wait_until(partial(component.health, ctx), 10, partial(is_ours, pid, started)):
                log(f"{component.name:<12} running    {ctx.url(component.name)}  pid {record['pid']}")
                continue
            why = "changed" if not same else "unhealthy"
            stop(int(record["pid"]), int(record["start_time"]))
            _start(component, ctx, state, argv, env)
            log(f"{component.name:<12} restarted  {ctx.url(component.name)}  ({why})")
        else:
            _start(component, ctx, state, argv, env)
            pid = state["components"][component.name]["pid"]
            log(f"{component.name:<12} started    {ctx.url(component.name)}  pid {pid}")
    return ctx


def down(config: PlatformConfig, log: Log = print, only: set[str] | None = None) -> None:
    """Stop, in reverse order, exactly the processes recorded in the state (verified by their start time)."""
    state = read_state(config)
    records: dict[str, Any] = state["components"]
    order = [c.name for c in COMPONENTS]
    names = sorted(records, key=lambda n: order.index(n) if n in order else -1, reverse=True)
    for name in names:
        if only is not None and name not in only:
            continue
        record = records[name]
        was_running = stop(int(record["pid"]), int(record["start_time"]))
        log(f"{name:<12} {'stopped' if was_running else 'was not running'} (pid {record['pid']})")
        # The port and seaweed's internal ports stay on record, so the next `up` reuses them.
        records[name] = {k: v for k, v in record.items() if k in ("port", "wanted", "seaweed_ports")} | {
            "pid": 0,
            "start_time": 0,
            "fingerprint": "",
        }
        write_state(config, state)


def status(config: PlatformConfig) -> list[ComponentStatus]:
    state = read_state(config)
    ctx = context(config, state)
    rows = []
    for component in COMPONENTS:
        record = state["components"].get(component.name)
        running = _alive(record)
        healthy = running and component.health(ctx)
        ready = component.ready(ctx) if running and component.ready else None
        pid = int(record["pid"]) if running and record else None
        rows.append(ComponentStatus(component.name, ctx.url(component.name), pid, running, healthy, ready))
    return rows
