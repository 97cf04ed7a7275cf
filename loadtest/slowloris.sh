#!/usr/bin/env bash
# Slow clients (slowloris) against the gateway's whole-header deadline
# (server.client_header_timeout), with nginx as a control. Release binary, one nginx
# upstream, wrk and report.py's slowloris probe (python3 stdlib only), all on
# loopback. See loadtest/README.md ("Slow clients: slowloris.sh").
#
#   baseline   wrk -t1 -cCONNECTIONS -dDURATION --latency on the target: req/s, p50, p99.
#   attack     SLOW connections from the helper, each sending
#              "GET / HTTP/1.1\r\nHost: x\r\n" and then one more header byte every
#              TRICKLE s, never the empty line that ends the header. START_DELAY s
#              after they are all open, the same wrk runs again (normal requests during
#              the attack). The helper records when the server closed each slow
#              connection (EOF or reset, seconds after its connect) and whether it
#              answered 408, and gives up ATTACK_BOUND s after opening them.
#              gateway_downstream_connections (and the established TCP connections on
#              the target's port) are sampled throughout: before, peak, after.
#   targets    gateway (client_header_timeout HEADER_TIMEOUT, access log off), then,
#              with CONTROL=1, nginx as a reverse proxy (run.sh's nginx-proxy config with
#              client_header_timeout HEADER_TIMEOUT added) as a control.
#
# Knobs (environment):
#   HEADER_TIMEOUT=5s     gateway server.client_header_timeout and nginx
#                         client_header_timeout (NNs or NNNms, at least 100ms)
#   SLOW=500              slow connections
#   TRICKLE=1             seconds between two header bytes on each slow connection
#   ATTACK_BOUND=(HEADER_TIMEOUT + 10, in whole seconds)   the helper's bound: seconds
#                         after the slow connections are open; the ones still open
#                         then are closed by the helper and reported
#   CONNECTIONS=16        wrk connections
#   WRK_THREADS=1         wrk threads
#   DURATION=8            seconds per wrk run (baseline, and during the attack)
#   START_DELAY=1         seconds between "all slow connections open" and wrk's start
#   THREADS=2             gateway server.threads
#   CONTROL=1             also attack nginx (0: the gateway only)
#   GATEWAY_BIN=...       use this binary instead of `cargo build --release`
#   RESULTS_DIR=loadtest/results   where the summary file goes
set -euo pipefail
# shellcheck source=loadtest/lib.sh
. "$(dirname "$0")/lib.sh" # SCRIPT_DIR, ROOT, GATEWAY_BIN, RESULTS_DIR, NGINX, helpers

HEADER_TIMEOUT=${HEADER_TIMEOUT:-5s}
SLOW=${SLOW:-500}
TRICKLE=${TRICKLE:-1}
CONNECTIONS=${CONNECTIONS:-16}
WRK_THREADS=${WRK_THREADS:-1}
DURATION=${DURATION:-8}
START_DELAY=${START_DELAY:-1}
THREADS=${THREADS:-2}
CONTROL=${CONTROL:-1}
SAMPLE_INTERVAL=0.2 # seconds between two samples of the open connections
OPEN_BOUND=10       # seconds the helper may spend opening the slow connections

# Targets (the gateway only; nginx is the control).
CLOSE_SLACK=1       # s: every slow connection closed by deadline + this
EARLY_SLACK=0.1     # s: and none before deadline - this

require_positive SLOW CONNECTIONS WRK_THREADS DURATION THREADS
[[ $CONTROL == [01] ]] || die "CONTROL must be 0 or 1, got '$CONTROL'"
[[ $TRICKLE =~ ^[0-9]+(\.[0-9]+)?$ ]] && calc "exit !($TRICKLE > 0)" \
    || die "TRICKLE must be a positive number of seconds, got '$TRICKLE'"
[[ $START_DELAY =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "START_DELAY must be a number of seconds, got '$START_DELAY'"
if [[ $HEADER_TIMEOUT =~ ^([0-9]+)s$ ]]; then
    HT_S=${BASH_REMATCH[1]}
elif [[ $HEADER_TIMEOUT =~ ^([0-9]+)ms$ ]]; then
    HT_S=$(calc "printf \"%.3f\", ${BASH_REMATCH[1]} / 1000")
else
    die "HEADER_TIMEOUT must look like 5s or 500ms, got '$HEADER_TIMEOUT'"
fi
calc "exit !($HT_S >= 0.1)" || die "HEADER_TIMEOUT must be at least 100ms (the gateway's minimum), got '$HEADER_TIMEOUT'"
ATTACK_BOUND=${ATTACK_BOUND:-$(calc "printf \"%d\", int($HT_S + 0.999) + 10")}
require_positive ATTACK_BOUND
calc "exit !($ATTACK_BOUND > $HT_S + $CLOSE_SLACK)" \
    || die "ATTACK_BOUND ($ATTACK_BOUND s) must exceed HEADER_TIMEOUT + $CLOSE_SLACK s"
(( WRK_THREADS <= CONNECTIONS )) || WRK_THREADS=$CONNECTIONS
require_tools wrk curl python3 timeout "$NGINX"

setup_tmp gateway-slowloris "configs, logs, raw wrk outputs, slow-connection records, samples"

# ---------------------------------------------------------------- set-up
echo "== slowloris test: HEADER_TIMEOUT=$HEADER_TIMEOUT SLOW=$SLOW TRICKLE=${TRICKLE}s ATTACK_BOUND=${ATTACK_BOUND}s CONNECTIONS=$CONNECTIONS WRK_THREADS=$WRK_THREADS DURATION=${DURATION}s START_DELAY=${START_DELAY}s THREADS=$THREADS CONTROL=$CONTROL"
echo "== temp dir: $TMP"
report begin slowloris- "gateway slowloris test" "header_timeout=$HEADER_TIMEOUT slow=$SLOW trickle_s=$TRICKLE attack_bound_s=$ATTACK_BOUND connections=$CONNECTIONS wrk_threads=$WRK_THREADS duration_s=$DURATION start_delay_s=$START_DELAY gateway_threads=$THREADS control=$CONTROL early_slack_s=$EARLY_SLACK close_slack_s=$CLOSE_SLACK" --versions nginx,wrk,python

prepare_gateway

# ---------------------------------------------------------------- servers
# Four distinct free loopback ports: upstream, gateway, its admin, nginx proxy.
free_ports 4
read -r P_UPSTREAM P_GW P_ADMIN P_NGINX <<<"${PORTS[*]}"

start_nginx nginx-upstream "$P_UPSTREAM" "$SCRIPT_DIR/nginx-upstream.conf.tmpl"
echo "== nginx-upstream: pid $NGINX_PID on 127.0.0.1:$P_UPSTREAM"

# The gateway: run.sh's template (access log off) with client_header_timeout added to
# its server section.
GW_TMPL=$TMP/gateway-slowloris.yaml.tmpl
sed 's/^server:$/&\n  client_header_timeout: @HEADER_TIMEOUT@/' "$SCRIPT_DIR/gateway.yaml.tmpl" >"$GW_TMPL"
render "$GW_TMPL" "$TMP/gateway.yaml" DIR="$TMP" NAME=gateway PORT="$P_GW" ADMIN_PORT="$P_ADMIN" \
    THREADS="$THREADS" UPSTREAM_PORT="$P_UPSTREAM" HEADER_TIMEOUT="$HEADER_TIMEOUT" \
    ACCESS_LOG_ENABLED=false ACCESS_LOG_FILE="$TMP/gateway-access.log"
[[ $(grep -c "^  client_header_timeout: $HEADER_TIMEOUT\$" "$TMP/gateway.yaml") == 1 ]] \
    || die "gateway: client_header_timeout not set in $TMP/gateway.yaml"
gateway_check_config gateway "$TMP/gateway.yaml"
gateway_launch gateway "$P_ADMIN"
wait_ready gateway "$GW_PID" "http://127.0.0.1:$P_GW/" ok "$TMP/gateway.log"
echo "== gateway: pid $GW_PID on 127.0.0.1:$P_GW (admin 127.0.0.1:$P_ADMIN), client_header_timeout $HEADER_TIMEOUT"
GATEWAY_PID=$GW_PID
METRICS=$(metrics_at "$P_ADMIN") || die "gateway: cannot read /metrics"
for m in gateway_downstream_connections gateway_downstream_refused_total 'gateway_downstream_closed_total{reason="header_timeout"}'; do
    grep -qF "$m " <<<"$METRICS" || die "gateway: no '$m' in /metrics (a build without the connection loop?)"
done

if [[ $CONTROL == 1 ]]; then
    # nginx: run.sh's reverse-proxy config with client_header_timeout added to its http
    # block (after the http-level keepalive_timeout, the one indented by four spaces).
    NGINX_TMPL=$TMP/nginx-proxy-slowloris.conf.tmpl
    sed 's/^    keepalive_timeout 120s;$/&\n    client_header_timeout @HEADER_TIMEOUT@;/' \
        "$SCRIPT_DIR/nginx-proxy.conf.tmpl" >"$NGINX_TMPL"
    start_nginx nginx-proxy "$P_NGINX" "$NGINX_TMPL" UPSTREAM_PORT="$P_UPSTREAM" HEADER_TIMEOUT="$HEADER_TIMEOUT"
    [[ $(grep -c "client_header_timeout $HEADER_TIMEOUT;" "$TMP/nginx-proxy.conf") == 1 ]] \
        || die "nginx-proxy: client_header_timeout not set in $TMP/nginx-proxy.conf"
    echo "== nginx-proxy: pid $NGINX_PID on 127.0.0.1:$P_NGINX, client_header_timeout $HEADER_TIMEOUT"
    NGINX_PROXY_PID=$NGINX_PID
fi

# ---------------------------------------------------------------- measurement
# One wrk run on TARGET, with the server's CPU time (its pid and children, in clock
# ticks) and the wall clock around it in $TMP/TARGET-wrk-PHASE.kv; prints its line.
measure_wrk() { # target phase url server-pid
    local out=$TMP/$1-wrk-$2.txt rc=0 c0 w0 w1
    c0=$(cpu_ticks "$4")
    w0=$(now_s)
    wrk_run "$DURATION" "$out" -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$DURATION"s --latency "$3" || rc=$?
    w1=$(now_s)
    printf '%s\n' "cpu0=$c0" "cpu1=$(cpu_ticks "$4")" "wall0=$w0" "wall1=$w1" >"$TMP/$1-wrk-$2.kv"
    (( rc == 0 )) || echo "   wrk exited $rc (output in $out)" >&2
    report wrk-line "$2" "$out" "$rc"
}

# Baseline wrk, then the attack with the same wrk during it, on one target; report.py
# reports it from the files $TMP/NAME-*.
run_target() { # name port admin-port|- server-pid
    local name=$1 port=$2 admin=$3 spid=$4 url="http://127.0.0.1:$2/" ready=$TMP/$1-attack.ready sampler attacker deadline pause rc=0
    # The sampler runs through both phases, so that its own cost is in both.
    report_bg "$TMP/$name-sampler.out" sample-conns "$admin" "$port" "$SAMPLE_INTERVAL" \
        "$(( DURATION * 2 + OPEN_BOUND + ATTACK_BOUND + 30 ))" "$TMP/$name-samples.txt"
    sampler=$BG
    echo "== $name: baseline: wrk -t$WRK_THREADS -c$CONNECTIONS -d${DURATION}s --latency $url"
    measure_wrk "$name" baseline "$url" "$spid"

    sleep 1 # wrk's connections are gone; a few samples before the attack
    [[ $admin == - ]] || metrics_at "$admin" >"$TMP/$name-before.metrics" 2>/dev/null || true

    echo "== $name: attack: $SLOW slow connections (one header byte every ${TRICKLE}s, bound ${ATTACK_BOUND}s), the same wrk ${START_DELAY}s after they are open"
    timeout -k 5 $(( OPEN_BOUND + ATTACK_BOUND + 30 )) python3 "$SCRIPT_DIR/report.py" attack 127.0.0.1 "$port" \
        "$SLOW" "$TRICKLE" "$ATTACK_BOUND" "$OPEN_BOUND" "$ready" "$TMP/$name-slow-connections.tsv" \
        >"$TMP/$name-attack.txt" 2>&1 &
    attacker=$!
    bg_started "$attacker"
    deadline=$(( SECONDS + OPEN_BOUND + 5 ))
    until [[ -f $ready ]]; do
        alive "$attacker" || die "$name: the slowloris helper exited before opening its connections: $(cat "$TMP/$name-attack.txt")"
        (( SECONDS < deadline )) || die "$name: the slowloris helper did not open its connections within $(( OPEN_BOUND + 5 ))s"
        sleep 0.05
    done
    sleep "$START_DELAY" & # (the line below is printed meanwhile)
    pause=$!
    echo "   $(report kv "$ready" opened) of $SLOW slow connections open"
    wait "$pause"
    measure_wrk "$name" attack "$url" "$spid"
    wait_bg "$attacker" || rc=$?
    (( rc == 0 )) || echo "   the slowloris helper exited $rc: $(cat "$TMP/$name-attack.txt")" >&2
    sleep 1 # let the last closes and wrk's connections reach the gauge
    kill -TERM "$sampler" 2>/dev/null || true
    wait_bg "$sampler" || true
    [[ $admin == - ]] || metrics_at "$admin" >"$TMP/$name-after.metrics" 2>/dev/null || true
    report slowloris "$name"
}

run_target gateway "$P_GW" "$P_ADMIN" "$GATEWAY_PID"
if [[ $CONTROL == 1 ]]; then
    run_target nginx "$P_NGINX" - "$NGINX_PROXY_PID"
else
    report sum "## nginx control skipped (CONTROL=0)"
fi

# A server that died during the run invalidates its numbers.
find_died
report logs --top 5 --strip-ids "$TMP/gateway.log"
finish --verdict --machine-line
