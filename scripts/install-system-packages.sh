#!/usr/bin/env bash
# Installs the Debian packages listed in scripts/apt-packages.txt that are missing (real servers the tests and the
# local platform start on 127.0.0.1), and Node.js when no `npx` is on PATH. As root it runs apt-get; otherwise it
# names the command to run and fails. `--list-missing` only prints what it would install, one name a line.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t wanted < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' scripts/apt-packages.txt | awk '{print $1}')
missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# tests/ci/test_gitlab_ci_local.py runs gitlab-ci-local@4.73.0 through npx. Debian's `nodejs npm` are installed only
# when no npx is on PATH at all: NodeSource's nodejs (and nvm's) bundles npm, and Debian's `npm` package conflicts
# with NodeSource's nodejs, so asking apt for it on such a machine would fail or replace a working Node.js.
if ! command -v npx >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi
if [[ ${1:-} == --list-missing ]]; then
  [[ ${#missing[@]} -eq 0 ]] || printf '%s\n' "${missing[@]}"
  exit 0
fi
[[ ${#missing[@]} -eq 0 ]] && exit 0
if [[ $EUID -ne 0 ]]; then
  echo "missing system packages: ${missing[*]}" >&2
  echo "install them with: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
# Debian starts packaged daemons on install; forkcast starts its own instances on free loopback ports instead.
for svc in redis-server prometheus prometheus-alertmanager; do
  if [[ " ${missing[*]} " == *" $svc "* ]] && command -v service >/dev/null; then
    service "$svc" stop >/dev/null 2>&1 || true
  fi
done
