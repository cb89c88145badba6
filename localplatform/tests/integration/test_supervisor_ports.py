"""A pod's second port stays where its running pod holds it: ``up`` again leaves the pod alone.

The alert receiver listens on two ports (the webhook, FORKCAST_PORT, and /metrics, FORKCAST_METRICS_PORT; issue
18.5). Only a pod's first port had a record in the state, so every ``prepare`` picked a new free port for the second
one, the receiver's environment changed and every ``up`` restarted it: the end-to-end drill's ``up`` after the
canary restarted it while OnlineAucLow was still firing, the new receiver had forgotten the alert, and Alertmanager's
next repeat started a second retrain.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from forkcast_local.config import load_config
from forkcast_local.supervisor import NAMED_PORTS, down, prepare, up

RUNNING = {"seaweed", "alert-receiver"}


def test_up_again_keeps_the_second_port_and_the_running_receiver(tmp_path: Path) -> None:
    config = dataclasses.replace(load_config(root=tmp_path / "platform"), ports={})
    lines: list[str] = []
    try:
        # With S3 running too: the receiver's environment names it (S3_ENDPOINT_URL).
        first = up(config, log=lines.append, only=RUNNING)
        metrics = first.plan("alert-receiver").env["FORKCAST_METRICS_PORT"]
        again = prepare(config)
        assert again.plan("alert-receiver").env["FORKCAST_METRICS_PORT"] == metrics
        assert again.component("alert-receiver").extra[NAMED_PORTS] == {
            "alert-receiver.metrics": int(metrics)
        }
        lines.clear()
        up(config, log=lines.append, only=RUNNING)
        assert [line.split()[:2] for line in lines] == [
            ["seaweed", "running"],
            ["alert-receiver", "running"],
        ], lines
    finally:
        down(config, log=lambda _line: None)
