#!/usr/bin/env bash
# A/B of two gateway binaries (e.g. before and after a change): CPU per proxied request
# and throughput, in alternating wrk runs against one nginx upstream, plus the count of
# Pingora's "failed to acquire reusable stream" lines each one logged. Loopback only,
# bounded (ROUNDS x 2 x (WARMUP + DURATION) seconds). Access log off, 2 worker threads.
#
#   OLD=path/to/gateway NEW=path/to/gateway loadtest/ab.sh
#   OLD=bin NEW=bin POLL_NEW=/api/stats loadtest/ab.sh   # one binary: the cost of an open dashboard
#
# Knobs: ROUNDS=3 DURATION=8 WARMUP=2 CONNECTIONS=64 WRK_THREADS=2
#        POLL_NEW=PATH  during NEW's measured runs, GET this admin path once a second
#                       (what the live dashboard's open page does with /api/stats)
set -euo pipefail
# shellcheck source=loadtest/lib.sh
. "$(dirname "$0")/lib.sh"

OLD=${OLD:?set OLD to the first gateway binary}
NEW=${NEW:?set NEW to the second gateway binary}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
CONNECTIONS=${CONNECTIONS:-64}
WRK_THREADS=${WRK_THREADS:-2}
POLL_NEW=${POLL_NEW:-}
require_positive ROUNDS DURATION CONNECTIONS WRK_THREADS
require_tools wrk curl python3 "$NGINX"
[[ -x $OLD && -x $NEW ]] || die "OLD and NEW must be executables"

setup_tmp gateway-ab "configs, logs"
free_ports 3
read -r P_UP P_GW P_ADMIN <<<"${PORTS[*]}"
start_nginx nginx-upstream "$P_UP" "$SCRIPT_DIR/nginx-upstream.conf.tmpl"

cat >"$TMP/gw.yaml" <<Y
listen: {proxy: 127.0.0.1:$P_GW, admin: 127.0.0.1:$P_ADMIN}
server: {threads: 2, grace_period: 0s, graceful_shutdown_timeout: 1s, pid_file: $TMP/gw.pid, upgrade_sock: $TMP/up.sock}
upstreams: {app: {backends: [{addr: 127.0.0.1:$P_UP}]}}
routes: [{path_prefix: /, upstream: app}]
access_log: {enabled: false}
Y

echo "== A/B: OLD=$OLD NEW=$NEW, $ROUNDS rounds, wrk -t$WRK_THREADS -c$CONNECTIONS -d${DURATION}s after ${WARMUP}s warm-up"
report load start
for round in $(seq "$ROUNDS"); do
    for which in old new; do
        bin=$OLD; [[ $which == new ]] && bin=$NEW
        log=$TMP/stderr-$which-$round.log
        "$bin" -c "$TMP/gw.yaml" 2>"$log" &
        pid=$!
        started "gateway-$which" "$pid"
        wait_ready "gateway-$which" "$pid" "http://127.0.0.1:$P_GW/" "" "$log"
        if ((WARMUP > 0)); then wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" "http://127.0.0.1:$P_GW/" >/dev/null; fi
        poller=""
        if [[ $which == new && -n $POLL_NEW ]]; then
            poll_each_second "http://127.0.0.1:$P_ADMIN$POLL_NEW" "$TMP/polls.txt"
            poller=$POLL_PID
        fi
        t0=$(cpu_ticks "$pid")
        wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"${DURATION}s" "http://127.0.0.1:$P_GW/" >"$TMP/wrk-$which-$round.txt"
        t1=$(cpu_ticks "$pid")
        if [[ -n $poller ]]; then stop_poll "$poller"; fi
        metrics_at "$P_ADMIN" >"$TMP/metrics-$which-$round.txt" 2>/dev/null || true
        stop_named "gateway-$which"
        report ab-round "$round" "$which" "$TMP/wrk-$which-$round.txt" "$log" "$TMP/metrics-$which-$round.txt" "$t0" "$t1"
    done
done
report ab-summary
if [[ -n $POLL_NEW ]]; then
    echo "== NEW's runs: $POLL_NEW answered 200 to $(grep -c '^200$' "$TMP/polls.txt" || true) of $(grep -c . "$TMP/polls.txt" || true) polls"
fi
report load end
