#!/usr/bin/env bash
# Installs every Debian package that building, running and testing somaagent needs.
# Idempotent and quiet: when everything is present it does nothing and touches no network.
# Works as root on a fresh Debian 12 (uses sudo when not root).
set -euo pipefail

packages=(
  # build
  build-essential pkg-config meson ninja-build clang llvm libclang-rt-14-dev
  libevent-dev libjansson-dev libsqlite3-dev libssl-dev libcurl4-openssl-dev
  libjwt-dev libmagic-dev libhiredis-dev libpq-dev libxml2-dev
  # unit tests, lint
  libcriterion-dev clang-format cppcheck
  # e2e, interop, bench
  python3 python3-pytest python3-pytest-xdist python3-httpx python3-jwt python3-cryptography python3-redis python3-psycopg2 python3-celery
  python3-yaml  # tests/deploy: the compose and Kubernetes files
  redis-server postgresql prometheus wrk nginx-light procps curl
  chromium
)
# Node.js may come from another repository (it bundles npm); only ask Debian for it when absent.
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts these daemons on install; the tests start their own on free ports.
for svc in redis-server postgresql nginx; do
  $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || $SUDO service "$svc" stop >/dev/null 2>&1 || true
done
