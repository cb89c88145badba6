#!/usr/bin/env bash
# Installs the pinned uv into .tools/ (git-ignored) with nothing but the system Python 3.11, so that `make setup`
# works on a fresh Debian 12 machine. Idempotent: does nothing when the right uv is already there.
set -euo pipefail
UV_VERSION="${1:?usage: bootstrap-uv.sh UV_VERSION}"
cd "$(dirname "$0")/.."

if [[ -x .tools/bin/uv ]] && [[ "$(.tools/bin/uv --version | cut -d' ' -f2)" == "$UV_VERSION" ]]; then
  exit 0
fi
if ! command -v python3 >/dev/null || ! python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "forkcast needs Python 3.11 as python3 (found: $(python3 --version 2>&1 || echo none))" >&2
  exit 1
fi
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  if [[ $EUID -eq 0 ]]; then
    apt-get update -qq && apt-get install -y -qq python3-venv
  else
    echo "python3 lacks venv/ensurepip: run 'sudo apt-get install -y python3-venv' and retry" >&2
    exit 1
  fi
fi
echo "installing uv $UV_VERSION into .tools/"
python3 -m venv .tools
.tools/bin/pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
