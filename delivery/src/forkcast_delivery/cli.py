"""forkcast-manifests: render every overlay with kustomize and check that the rendered objects are wired.

Rules (each names the object at fault and why):
  commands    every forkcast container runs a console script of the package its image installs
  services    every Service selects a pod template and targets a port it declares
  references  every ConfigMap/Secret (and key) a pod references is rendered or in provided-by-cluster.yaml
  env         each container's environment satisfies its settings classes, in production mode
  metrics     every metric a rule, analysis or dashboard reads is exported by a scraped workload
  network     the NetworkPolicies admit exactly the flows of manifests/flows.yaml
  argocd      the Applications ignore the replicas that HPAs own
Exit status: 0 when every overlay passes, 1 when a problem is found, 2 when an overlay cannot be rendered.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from forkcast_delivery.checks import Problem, rules
from forkcast_delivery.context import build, shared_docs
from forkcast_delivery.render import RenderError, overlay_dirs


def run(root: Path, overlays: list[Path], only: list[str]) -> list[tuple[str, Problem]]:
    """Every problem of every overlay, as (overlay name, problem)."""
    checks = rules()
    found = []
    shared = shared_docs(root)  # one render of manifests/observability for every overlay
    for overlay in overlays:
        ctx = build(root, overlay, shared)
        for name in only or list(checks):
            found += [(overlay.name, p) for p in checks[name](ctx)]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="forkcast-manifests", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="render the overlays and run the wiring checks")
    check.add_argument("--root", type=Path, default=Path.cwd(), help="repository root (default: current dir)")
    check.add_argument("--overlay", action="append", default=[], help="overlay name (default: every overlay)")
    check.add_argument("--rule", action="append", default=[], choices=sorted(rules()), help="run only these")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    overlays = [root / "manifests" / "overlays" / o for o in args.overlay] or overlay_dirs(root)
    try:
        problems = run(root, overlays, args.rule)
    except RenderError as exc:
        print(f"forkcast-manifests: {exc}", file=sys.stderr)
        return 2
    for overlay, problem in problems:
        print(f"{overlay}: {problem}")
    names = ", ".join(o.name for o in overlays)
    print(f"{len(problems)} problem(s) in {len(overlays)} overlay(s) ({names})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
