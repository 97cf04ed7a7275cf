#!/usr/bin/env bash
# The original gateway's quick start, as a user runs it: the README's run command
# (scripts/run.sh, default config, nothing else installed), then six quick
# `curl localhost:8000/ping`: five 200s and a 429. Then SIGTERM, which must exit 0.
# Needs ports 8000 and 9100 free (the default config's). Bounded: 20 min for the build.
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
scripts/run.sh >"$log" 2>&1 &
runner=$!
cleanup() { kill "$runner" 2>/dev/null || true; pkill -P "$runner" 2>/dev/null || true; }
trap cleanup EXIT
deadline=$((SECONDS + 1200))
# Both listeners up (a request to / is proxied or answered 503: it spends no /ping token).
until curl -fs -o /dev/null http://127.0.0.1:9100/healthz \
  && curl -s -o /dev/null http://127.0.0.1:8000/; do
  if ! kill -0 "$runner" 2>/dev/null; then
    echo "quickstart: the gateway exited:"; tail -n 30 "$log"; exit 1
  fi
  if ((SECONDS > deadline)); then echo "quickstart: not up after 20 min"; tail -n 30 "$log"; exit 1; fi
  sleep 1
done
statuses=()
for _ in 1 2 3 4 5 6; do
  statuses+=("$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/ping)")
done
echo "quickstart: six curls of /ping: ${statuses[*]}"
[[ "${statuses[*]}" == "200 200 200 200 200 429" ]] || { echo "quickstart: expected five 200s then 429"; exit 1; }
body=$(curl -s http://127.0.0.1:8000/ping)
echo "quickstart: the 7th: $body"
# `cargo run` execs the gateway (scripts/run.sh uses exec), so the runner's pid is the gateway's.
kill -TERM "$runner"
for _ in $(seq 100); do kill -0 "$runner" 2>/dev/null || break; sleep 0.1; done
if wait "$runner"; then echo "quickstart: SIGTERM: exit 0"; else echo "quickstart: SIGTERM: exit $?"; exit 1; fi
trap - EXIT
