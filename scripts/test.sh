#!/usr/bin/env bash
# The test command: installs what the tests need when missing, then runs every test
# (unit tests, and end-to-end tests that start the real gateway, upstreams and redis-server).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo test --all-targets "$@"
# The load-test harness's parsers and tables, on captured outputs.
python3 -m unittest discover -s loadtest -p 'test_*.py'
