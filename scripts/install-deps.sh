#!/usr/bin/env bash
# Installs the system packages the tests and load tests need, when they are missing:
# redis-server (tests), python3 (a real WSGI upstream in tests/edge.rs), prometheus +
# promtool (tests/prometheus.rs), chromium + a font (tests/dashboard.rs drives the page
# in a real headless browser), docker-compose (CI validates docker-compose.yml),
# nginx + wrk (load tests), cmake + a C compiler
# (Pingora's build). `install-deps.sh build`: only
# what the build needs (for scripts/run.sh).
set -euo pipefail

missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
if [ "${1:-}" != build ]; then
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  command -v python3 >/dev/null 2>&1 || missing+=(python3)
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
  command -v wrk >/dev/null 2>&1 || missing+=(wrk)
  { command -v prometheus && command -v promtool; } >/dev/null 2>&1 || missing+=(prometheus)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium fonts-dejavu-core)
  command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
if command -v apt-get >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "please install: ${missing[*]} (no apt-get here)" >&2
  exit 1
fi
