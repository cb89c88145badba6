"""Every Service selects at least one pod template of the render and targets a port those pods declare.

A Service whose selector matches no template, or whose targetPort names a port the pods lack, has no endpoints
in a cluster: its clients fail with connection refused while every object is schema-valid.
"""

from __future__ import annotations

from forkcast_delivery.checks.problem import Problem
from forkcast_delivery.context import Context
from forkcast_delivery.objects import matches_plain, of_kind, ref, resolve_port

RULE = "services"


def check(ctx: Context) -> list[Problem]:
    problems = []
    for service in of_kind(ctx.docs, "Service"):
        spec = service["spec"]
        if spec.get("type") == "ExternalName":
            continue
        selector = spec.get("selector")
        selected = [t for t in ctx.templates if matches_plain(selector, t.labels)]
        if not selected:
            problems.append(Problem(RULE, ref(service), f"selector {selector} selects no pod template"))
            continue
        for port in spec.get("ports") or []:
            target = port.get("targetPort", port["port"])
            protocol = port.get("protocol", "TCP")
            for template in selected:
                number = resolve_port(template, target, protocol)
                declared = {
                    int(p["containerPort"])
                    for _, p in template.ports()
                    if p.get("protocol", "TCP") == protocol
                }
                if number is None or number not in declared:
                    problems.append(
                        Problem(
                            RULE,
                            ref(service),
                            f"port {port.get('name', port['port'])} targets {target!r}/{protocol}, "
                            f"which {template.name} does not declare",
                        )
                    )
    return problems
