#!/usr/bin/env bash
# The run command: installs what building Pingora needs when it is missing (cmake, a C
# compiler), then builds and runs the gateway in release mode. With no arguments it runs
# the default config; any arguments are passed to the gateway (e.g. -c my.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh build
if [ $# -eq 0 ]; then
  set -- -c conf/gateway.yaml
fi
exec cargo run --release --quiet -- "$@"
