#!/usr/bin/env bash
# The Debian packages clickserver needs before pip and npm can install it; `make install` and
# `make install-dev` run this first, and so does CI (through `make test`).
#
#   scripts/system_deps.sh         what `make demo` needs: a C toolchain and the MySQL client
#                                  headers for mysqlclient, pkg-config, venv, Node.js and npm
#   scripts/system_deps.sh --dev   also Debian's Chromium and ChromeDriver for the browser tests,
#                                  and nginx, systemd (systemd-analyze) and openssl, with which
#                                  clickserver/tests/test_deploy.py checks deploy/
#   scripts/system_deps.sh --bench also wrk, the HTTP load generator bench/ingest.py drives
#
# As root it installs what is missing with apt-get; otherwise it prints the exact command to run
# and fails, instead of leaving pip to stop at "pkg-config --exists mysqlclient".
set -euo pipefail
python="${PYTHON:-python3}"

packages=(build-essential pkg-config default-libmysqlclient-dev python3-venv python3-dev nodejs npm)
case "${1:-}" in
  --dev) packages+=(chromium chromium-driver nginx systemd openssl) ;;
  --bench) packages+=(wrk) ;;
esac

if ! command -v dpkg >/dev/null 2>&1; then
  echo "system-deps: not a Debian system; install the equivalents of: ${packages[*]}" >&2
  exit 0
fi

missing=()
for package in "${packages[@]}"; do
  case "$package" in
    # Node.js and npm from elsewhere (nvm, NodeSource, a newer image) serve as well as Debian's.
    nodejs) command -v node >/dev/null 2>&1 && continue ;;
    npm) command -v npm >/dev/null 2>&1 && continue ;;
    # Any nginx flavour (nginx-light, nginx-full, a newer build) can check the configuration.
    nginx) command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] && continue ;;
    systemd) command -v systemd-analyze >/dev/null 2>&1 && continue ;;
    openssl) command -v openssl >/dev/null 2>&1 && continue ;;
    # A Python built from source (pyenv, the python:3.11 images) has venv and its headers.
    python3-venv) "$python" -c 'import ensurepip, venv' >/dev/null 2>&1 && continue ;;
    python3-dev)
      [ -f "$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ] \
        && continue ;;
  esac
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" \
    || missing+=("$package")
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
command="apt-get install -y ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "system-deps: missing Debian packages: ${missing[*]}" >&2
  echo "system-deps: install them first, then rerun make:" >&2
  echo "    sudo apt-get update && sudo $command" >&2
  exit 1
fi
echo "system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086  # the package list is meant to split into words
apt-get install -y -qq ${missing[*]} >/dev/null
