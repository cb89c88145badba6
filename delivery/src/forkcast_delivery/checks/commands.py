"""Every forkcast container runs a console script of the package its image installs.

A container's image is traced to its workspace package (context.Context.package_of); its program is its
``command`` or else the Dockerfile's ENTRYPOINT/CMD. A typo in a command, a script moved to another package, or
an image built from the wrong Dockerfile shows here instead of as a CrashLoopBackOff. Every forkcast image is also
pinned, by digest (what CI's release jobs write) or by a version tag: a mutable tag such as ``main`` changes what
runs without a change in Git, so no canary, no rollback and no record of it.
"""

from __future__ import annotations

import re

from forkcast_delivery import workspace
from forkcast_delivery.checks.problem import Problem
from forkcast_delivery.context import Context

RULE = "commands"
_PINNED = re.compile(r"(@sha256:[0-9a-f]{64}|:v?\d+\.\d+\.\d+)$")


def check(ctx: Context) -> list[Problem]:
    problems = []
    for template in ctx.templates:
        for container in template.containers():
            image = str(container.get("image", ""))
            where = f"container {container['name']}"
            if workspace.repository(image) in ctx.packages:
                problems.append(
                    Problem(
                        RULE, template.name, f"{where}: image {image!r} is not renamed by an images: entry"
                    )
                )
                continue
            package = ctx.package_of(dict(container))
            if package is None:
                continue
            if not _PINNED.search(image):
                problems.append(
                    Problem(
                        RULE,
                        template.name,
                        f"{where}: image {image!r} is not pinned by digest or version tag",
                    )
                )
            if not package.dockerfile.exists():
                problems.append(Problem(RULE, template.name, f"{where}: {package.name} has no Dockerfile"))
                continue
            built = workspace.read_dockerfile(package.dockerfile)
            if package.name not in built.packages:
                problems.append(
                    Problem(
                        RULE, template.name, f"{where}: {package.dockerfile} does not install {package.name}"
                    )
                )
            prog = workspace.program(dict(container), built)
            if prog not in package.scripts:
                problems.append(
                    Problem(
                        RULE,
                        template.name,
                        f"{where} runs {prog!r}, not a console script of {package.name} "
                        f"({', '.join(sorted(package.scripts)) or 'it has none'})",
                    )
                )
    return problems
