#!/usr/bin/env bash
# Circuit breakers under load: what a client sees when one of two backends dies (with
# and without retries), how fast the breaker opens (passively under load, and by the
# active health check with no traffic), and how cheap the 503s are when every backend
# is down. Release binary, two nginx upstreams, wrk, all on loopback. See
# loadtest/BREAKER.md.
#
#   retries1 / retries0   "one of two dies", passive breaker only (no health check),
#                         route retries 1 / 0: three wrk runs back to back, BEFORE (both
#                         up), DURING (upstream 2 is SIGKILLed KILL_DELAY s into it),
#                         AFTER (still dead, breaker open); req/s, p50/p99, non-2xx per
#                         phase, a per-second timeline from the gateway's counters, and
#                         the time from the kill to gateway_breaker_state = 1 (polled
#                         every 10 ms during DURING).
#   hc                    same kill with an active health check (interval 1s,
#                         unhealthy_threshold 2) and no traffic: time from kill to open.
#   alldown               both upstreams dead, breakers tripped by a few requests
#                         (open_duration 60s), then wrk: 503 count, req/s, p50/p99 of the
#                         503s (target p99 < 1 ms), and TCP connections accepted on the
#                         dead upstreams' ports during the run (target 0).
#
# Knobs (environment):
#   DURATION=12           seconds of wrk per "one of two dies" scenario, split in three
#                         equal phases (BEFORE, DURING, AFTER; at least 1 s each)
#   ALLDOWN_DURATION=8    seconds of wrk in "all down"
#   SCENARIOS="retries1 retries0 hc alldown"   subset/order (spaces or commas)
#   CONNECTIONS=32        wrk connections
#   WRK_THREADS=2         wrk threads
#   THREADS=2             gateway server.threads
#   KILL_DELAY=0.2        seconds into DURING before upstream 2 is killed (load is on)
#   CONSECUTIVE=5         circuit_breaker.consecutive_failures
#   OPEN_DURATION=5s      circuit_breaker.open_duration (one of two dies, hc)
#   HC_WAIT=10            seconds to wait for the health check to open the breaker
#   ALLDOWN_CONTROL=1     in "all down", also run the same wrk on the gateway's /ping
#                         (a 200 it answers itself) as a latency floor for comparison
#   GATEWAY_BIN=...       use this binary instead of `cargo build --release`
#   RESULTS_DIR=loadtest/results   where the summary file goes
set -euo pipefail
# shellcheck source=loadtest/lib.sh
. "$(dirname "$0")/lib.sh" # SCRIPT_DIR, ROOT, GATEWAY_BIN, RESULTS_DIR, NGINX, helpers

DURATION=${DURATION:-12}
ALLDOWN_DURATION=${ALLDOWN_DURATION:-8}
SCENARIOS=${SCENARIOS:-retries1 retries0 hc alldown}
CONNECTIONS=${CONNECTIONS:-32}
WRK_THREADS=${WRK_THREADS:-2}
THREADS=${THREADS:-2}
KILL_DELAY=${KILL_DELAY:-0.2}
CONSECUTIVE=${CONSECUTIVE:-5}
OPEN_DURATION=${OPEN_DURATION:-5s}
HC_WAIT=${HC_WAIT:-10}
ALLDOWN_CONTROL=${ALLDOWN_CONTROL:-1}
SAMPLE_INTERVAL=0.1    # seconds between /metrics samples for the timelines
ALLDOWN_OPEN=60s       # open_duration in "all down": no half-open trial during the run
HC_INTERVAL=1s
HC_TIMEOUT=500ms
HC_UNHEALTHY=2

# (The targets, and what each scenario reports, are in report.py's cmd_breaker.)

require_positive DURATION ALLDOWN_DURATION CONNECTIONS WRK_THREADS THREADS CONSECUTIVE HC_WAIT
[[ $ALLDOWN_CONTROL == [01] ]] || die "ALLDOWN_CONTROL must be 0 or 1, got '$ALLDOWN_CONTROL'"
(( DURATION >= 3 )) || die "DURATION must be at least 3 (three phases of at least 1 s), got $DURATION"
[[ $KILL_DELAY =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "KILL_DELAY must be a number of seconds, got '$KILL_DELAY'"
[[ $OPEN_DURATION =~ ^[0-9]+(ms|s|m)$ ]] || die "OPEN_DURATION must look like 5s, 500ms or 1m, got '$OPEN_DURATION'"
(( WRK_THREADS <= CONNECTIONS )) || WRK_THREADS=$CONNECTIONS
PHASE=$(( DURATION / 3 ))
awk -v k="$KILL_DELAY" -v p="$PHASE" 'BEGIN { exit !(k < p) }' \
    || die "KILL_DELAY ($KILL_DELAY s) must be shorter than a phase ($PHASE s)"

parse_list SCENARIOS SCENARIO_LIST scenario "retries1 retries0 hc alldown"
require_tools wrk curl python3 timeout "$NGINX"

# ---------------------------------------------------------------- processes & cleanup
# nginx workers: the children of the master, recorded at start so they can be killed.
declare -A WORKERS=()
# (lib.sh's cleanup stops these too.) Only a live nginx (a worker whose master was
# killed): never another process that reused the pid.
cleanup_extra_pids() {
    local pid
    for pid in ${WORKERS[*]}; do
        if [[ $(ps -o comm= -p "$pid" 2>/dev/null) == nginx ]]; then echo "$pid"; fi
    done
}
setup_tmp gateway-breaker "configs, logs, raw wrk outputs, /metrics samples"

# Stops the processes whose names start with PREFIX (and forgets them).
stop_prefix() { # prefix
    local n
    stop_named "$1*"
    for n in "${!WORKERS[@]}"; do [[ $n == "$1"* ]] && unset "WORKERS[$n]"; done
    return 0
}

# ---------------------------------------------------------------- set-up
echo "== circuit-breaker test: SCENARIOS='${SCENARIO_LIST[*]}' DURATION=${DURATION}s (3 x ${PHASE}s) ALLDOWN_DURATION=${ALLDOWN_DURATION}s CONNECTIONS=$CONNECTIONS WRK_THREADS=$WRK_THREADS THREADS=$THREADS"
echo "== temp dir: $TMP"
report begin breaker- "gateway circuit-breaker test" "scenarios=${SCENARIO_LIST[*]} duration_s=$DURATION phase_s=$PHASE alldown_duration_s=$ALLDOWN_DURATION connections=$CONNECTIONS wrk_threads=$WRK_THREADS gateway_threads=$THREADS kill_delay_s=$KILL_DELAY consecutive_failures=$CONSECUTIVE open_duration=$OPEN_DURATION hc_interval=$HC_INTERVAL hc_timeout=$HC_TIMEOUT hc_unhealthy=$HC_UNHEALTHY alldown_open=$ALLDOWN_OPEN sample_interval_s=$SAMPLE_INTERVAL" --versions nginx,wrk

prepare_gateway

# Four distinct free loopback ports per scenario (upstream 1, upstream 2, gateway,
# admin), held open together while they are chosen.
free_ports $(( 4 * ${#SCENARIO_LIST[@]} ))
NEXT_PORT=0
take_ports() { # sets P_UP1 P_UP2 P_GW P_ADMIN
    P_UP1=${PORTS[NEXT_PORT]}
    P_UP2=${PORTS[NEXT_PORT + 1]}
    P_GW=${PORTS[NEXT_PORT + 2]}
    P_ADMIN=${PORTS[NEXT_PORT + 3]}
    NEXT_PORT=$(( NEXT_PORT + 4 ))
}

# One nginx upstream (1 worker, `return 200 "ok\n"`) from the shared template, in a
# directory of its own (the template's pid file and temp paths are fixed names).
start_upstream() { # name port
    local name=$1 port=$2 dir=$TMP/$1 pid
    mkdir -p "$dir"
    start_nginx_in "$dir" nginx-upstream "$name" "$port" "$SCRIPT_DIR/nginx-upstream.conf.tmpl"
    pid=$NGINX_PID
    # Disowned: the scenarios SIGKILL it, and bash would print a "Killed" job notice.
    # (bash still reaps it; alive() and stop_pids work the same.)
    disown "$pid"
    grep -q 'worker_processes 1;' "$dir/nginx-upstream.conf" || die "$name: expected 'worker_processes 1;' in $dir/nginx-upstream.conf"
    WORKERS[$name]=$(ps -o pid= --ppid "$pid" | tr -s ' \n' ' ' | sed 's/^ //; s/ $//')
    [[ -n ${WORKERS[$name]} ]] || die "$name: no nginx worker under master $pid"
    echo "   $name: nginx master $pid, worker(s) ${WORKERS[$name]}, on 127.0.0.1:$port"
}
master_of() { # upstream name -> master pid
    local i
    for i in "${!PROC_NAMES[@]}"; do [[ ${PROC_NAMES[i]} == "$1" ]] && echo "${PROC_PIDS[i]}" && return 0; done
    return 1
}

# Renders, validates and starts a gateway; waits for /readyz and a proxied "ok".
start_gateway() { # name retries open_duration max_open [+HC]
    local name=$1 conf=$TMP/$1.yaml log=$TMP/$1.log pid i body b
    render "$SCRIPT_DIR/breaker-gateway.yaml.tmpl" "$conf" DIR="$TMP" NAME="$name" \
        PORT="$P_GW" ADMIN_PORT="$P_ADMIN" THREADS="$THREADS" UP1_PORT="$P_UP1" UP2_PORT="$P_UP2" \
        RETRIES="$2" CONSECUTIVE="$CONSECUTIVE" OPEN_DURATION="$3" MAX_OPEN="$4" \
        HC_INTERVAL="$HC_INTERVAL" HC_TIMEOUT="$HC_TIMEOUT" HC_UNHEALTHY="$HC_UNHEALTHY" "${@:5}"
    gateway_check_config "$name" "$conf"
    gateway_launch "$name" "$P_ADMIN"
    pid=$GW_PID
    wait_ready "$name" "$pid" "http://127.0.0.1:$P_GW/" ok "$log"
    # Both backends answer through it (round robin), and both breakers are closed.
    for i in 1 2 3 4; do
        body=$(curl -sS --max-time 2 "http://127.0.0.1:$P_GW/check-$i") || die "$name: check request failed"
        [[ $body == ok ]] || die "$name: check request answered '$body', not 'ok'"
    done
    for b in "$P_UP1" "$P_UP2"; do
        [[ $(report state "127.0.0.1:$P_ADMIN" "127.0.0.1:$b") == 0 ]] || die "$name: breaker of 127.0.0.1:$b is not closed at start"
    done
    echo "   $name: pid $pid on 127.0.0.1:$P_GW (admin $P_ADMIN), retries $2, open_duration $3${5:+, active health check}"
}

snapshot() { metrics_at "$P_ADMIN" 2>/dev/null >"$1" || true; } # file: the gateway's /metrics
# Starts wrk in the background (lib.sh's wrk_bg); WRK_PID is its pid.
start_wrk() { # seconds url outfile
    wrk_bg "$1" "$3" -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$1"s --latency "$2"
}

# ---------------------------------------------------------------- one of two dies
scenario_one_dies() { # retries
    local retries=$1 name=r$1 rc p sampler kw line=()
    take_ports
    echo "== one of two dies, retries $retries, passive breaker (no health check): 3 x wrk -t$WRK_THREADS -c$CONNECTIONS -d${PHASE}s; upstream 2 SIGKILLed ${KILL_DELAY}s into DURING"
    start_upstream "$name-up1" "$P_UP1"
    start_upstream "$name-up2" "$P_UP2"
    start_gateway "$name-gw" "$retries" "$OPEN_DURATION" "$(( ${OPEN_DURATION%%[a-z]*} * 8 ))${OPEN_DURATION##*[0-9]}"
    report_bg "$TMP/$name-sampler.out" sample-metrics "127.0.0.1:$P_ADMIN" "$TMP/$name-samples.jsonl" "$SAMPLE_INTERVAL"
    sampler=$BG
    snapshot "$TMP/$name-snap0.metrics"
    # The phases run back to back: each one's line is printed while the next one runs.
    for p in BEFORE DURING AFTER; do
        start_wrk "$PHASE" "http://127.0.0.1:$P_GW/" "$TMP/$name-wrk-$p.txt"
        if [[ $p == DURING ]]; then
            sleep "$KILL_DELAY"
            # shellcheck disable=SC2086
            report_bg "$TMP/$name-killwatch.txt" killwatch "127.0.0.1:$P_ADMIN" "127.0.0.1:$P_UP2" "$(( PHASE + 2 ))" \
                "$(master_of "$name-up2")" ${WORKERS[$name-up2]}
            kw=$BG
        fi
        (( ${#line[@]} == 0 )) || report wrk-line --width 7 "${line[@]}"
        rc=0
        wait_bg "$WRK_PID" || rc=$?
        (( rc == 0 )) || echo "   wrk exited $rc in $p (output in $TMP/$name-wrk-$p.txt)" >&2
        line=("$p" "$TMP/$name-wrk-$p.txt" "$rc")
        if [[ $p == DURING ]]; then wait_bg "$kw" || true; fi
    done
    kill -TERM "$sampler" 2>/dev/null || true
    wait_bg "$sampler" || true
    report wrk-line --width 7 "${line[@]}"
    snapshot "$TMP/$name-snap1.metrics"
    report breaker one-dies "$name" retries="$retries" up1="127.0.0.1:$P_UP1" up2="127.0.0.1:$P_UP2"
    stop_prefix "$name-"
}

# ---------------------------------------------------------------- health check, no traffic
scenario_hc() {
    local name=hc
    take_ports
    echo "== one of two dies, active health check (interval $HC_INTERVAL, timeout $HC_TIMEOUT, unhealthy_threshold $HC_UNHEALTHY), no traffic"
    start_upstream "$name-up1" "$P_UP1"
    start_upstream "$name-up2" "$P_UP2"
    start_gateway "$name-gw" 1 "$OPEN_DURATION" 60s +HC
    sleep 0.5 # no traffic from here on (the start-up checks were the last requests)
    # shellcheck disable=SC2086
    report killwatch "127.0.0.1:$P_ADMIN" "127.0.0.1:$P_UP2" "$HC_WAIT" \
        "$(master_of "$name-up2")" ${WORKERS[$name-up2]} >"$TMP/$name-killwatch.txt" 2>&1 || true
    snapshot "$TMP/$name-snap1.metrics"
    report breaker hc "$name" up1="127.0.0.1:$P_UP1" up2="127.0.0.1:$P_UP2"
    stop_prefix "$name-"
}

# ---------------------------------------------------------------- all down
scenario_alldown() {
    local name=down i l=() rc=0 ups
    take_ports
    echo "== all down: both upstreams SIGKILLed, breakers tripped by requests (open_duration $ALLDOWN_OPEN, no health check), then wrk -t$WRK_THREADS -c$CONNECTIONS -d${ALLDOWN_DURATION}s"
    start_upstream "$name-up1" "$P_UP1"
    start_upstream "$name-up2" "$P_UP2"
    start_gateway "$name-gw" 1 "$ALLDOWN_OPEN" 120s
    # shellcheck disable=SC2086
    kill -KILL "$(master_of "$name-up1")" "$(master_of "$name-up2")" ${WORKERS[$name-up1]} ${WORKERS[$name-up2]} 2>/dev/null || true
    sleep 0.1
    # Trip both breakers: each GET fails on one backend and its retry on the other.
    report trip "127.0.0.1:$P_ADMIN" "http://127.0.0.1:$P_GW/" "127.0.0.1:$P_UP1" "127.0.0.1:$P_UP2" \
        $(( 20 * CONSECUTIVE )) "$TMP/$name-trip.txt" || die "all down: breakers not tripped"

    # Count connection attempts on the dead upstreams' ports during the run.
    ups=("$P_UP1" "$P_UP2")
    for i in 1 2; do
        report_bg "$TMP/$name-listen$i.out" listen "${ups[i - 1]}" "$TMP/$name-listen$i.ready"
        l+=("$BG")
    done
    local deadline=$(( SECONDS + READY_TIMEOUT ))
    until [[ -f $TMP/$name-listen1.ready && -f $TMP/$name-listen2.ready ]]; do
        alive "${l[0]}" && alive "${l[1]}" || die "all down: a counting listener exited: $(cat "$TMP/$name-listen"*.out)"
        (( SECONDS < deadline )) || die "all down: counting listeners not ready"
        sleep 0.05
    done

    snapshot "$TMP/$name-snap0.metrics"
    start_wrk "$ALLDOWN_DURATION" "http://127.0.0.1:$P_GW/" "$TMP/$name-wrk.txt"
    wait_bg "$WRK_PID" || rc=$?
    (( rc == 0 )) || echo "   wrk exited $rc (output in $TMP/$name-wrk.txt)" >&2
    snapshot "$TMP/$name-snap1.metrics"
    kill -TERM "${l[@]}" 2>/dev/null || true
    for i in "${l[@]}"; do wait_bg "$i" || true; done

    # Control: the same load on the gateway's own /ping (answered by the gateway, no
    # upstream either): the floor of what this machine gives for a trivial response.
    if [[ $ALLDOWN_CONTROL == 1 ]]; then
        rc=0
        start_wrk "$ALLDOWN_DURATION" "http://127.0.0.1:$P_GW/ping" "$TMP/$name-wrk-ping.txt"
        wait_bg "$WRK_PID" || rc=$?
        (( rc == 0 )) || echo "   wrk exited $rc on /ping (output in $TMP/$name-wrk-ping.txt)" >&2
    fi
    report breaker all-down "$name" up1="127.0.0.1:$P_UP1" up2="127.0.0.1:$P_UP2"
    stop_prefix "$name-"
}

for s in "${SCENARIO_LIST[@]}"; do
    case $s in
        retries1) scenario_one_dies 1 ;;
        retries0) scenario_one_dies 0 ;;
        hc) scenario_hc ;;
        alldown) scenario_alldown ;;
    esac
done

find_died
report logs --top 5 --strip-ids "$TMP"/*-gw.log
finish --verdict
