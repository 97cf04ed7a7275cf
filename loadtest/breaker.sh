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

# Targets.
ALLDOWN_P99_MAX_MS=1   # p99 of the 503s
ALLDOWN_CONNECTS_MAX=0 # connections to the dead upstreams during the run

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
show_load start
LOAD_START=$(load_avg)

prepare_gateway

TOOL=$TMP/breaker_tool.py
cp "$SCRIPT_DIR/breaker-tool.py.tmpl" "$TOOL"
tool() { python3 "$TOOL" "$@"; }

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
    local name=$1 conf=$TMP/$1.yaml log=$TMP/$1.log pid
    render "$SCRIPT_DIR/breaker-gateway.yaml.tmpl" "$conf" DIR="$TMP" NAME="$name" \
        PORT="$P_GW" ADMIN_PORT="$P_ADMIN" THREADS="$THREADS" UP1_PORT="$P_UP1" UP2_PORT="$P_UP2" \
        RETRIES="$2" CONSECUTIVE="$CONSECUTIVE" OPEN_DURATION="$3" MAX_OPEN="$4" \
        HC_INTERVAL="$HC_INTERVAL" HC_TIMEOUT="$HC_TIMEOUT" HC_UNHEALTHY="$HC_UNHEALTHY" "${@:5}"
    gateway_check_config "$name" "$conf"
    gateway_launch "$name" "$P_ADMIN"
    pid=$GW_PID
    wait_ready "$name" "$pid" "http://127.0.0.1:$P_GW/" ok "$log"
    # Both backends answer through it (round robin), and both breakers are closed.
    local i body
    for i in 1 2 3 4; do
        body=$(curl -sS --max-time 2 "http://127.0.0.1:$P_GW/check-$i") || die "$name: check request failed"
        [[ $body == ok ]] || die "$name: check request answered '$body', not 'ok'"
    done
    for b in "$P_UP1" "$P_UP2"; do
        [[ $(breaker_state "127.0.0.1:$b") == 0 ]] || die "$name: breaker of 127.0.0.1:$b is not closed at start"
    done
    echo "   $name: pid $pid on 127.0.0.1:$P_GW (admin $P_ADMIN), retries $2, open_duration $3${5:+, active health check}"
}

breaker_state() { # backend-label -> 0/1/2, or NA
    metrics_at "$P_ADMIN" 2 2>/dev/null |
        awk -v b="$1" '/^gateway_breaker_state\{/ && index($0, "backend=\"" b "\"") { v = $NF } END { print (v == "" ? "NA" : v) }'
}
snapshot() { tool snapshot "127.0.0.1:$P_ADMIN"; }
statuses_except() { # status snapshot-line -> sum of the counts of every other status
    local w n=0
    for w in $2; do [[ $w =~ ^([0-9]+)=([0-9]+)$ && ${BASH_REMATCH[1]} != "$1" ]] && n=$(( n + BASH_REMATCH[2] )); done
    echo "$n"
}
kv() { # key snapshot-line -> value (0 if absent)
    local w
    for w in $2; do [[ $w == "$1="* ]] && { echo "${w#*=}"; return; }; done
    echo 0
}

# Starts wrk in the background (lib.sh's wrk_bg); WRK_PID is its pid.
start_wrk() { # seconds url outfile
    wrk_bg "$1" "$3" -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$1"s --latency "$2"
}

summary_init
fmt_ms() { [[ $1 == NA ]] && echo NA || calc "printf \"%.3f\", $1"; }

# ---------------------------------------------------------------- one of two dies
scenario_one_dies() { # retries
    local retries=$1 name=r$1 url b2 out rc p label
    take_ports
    echo "== one of two dies, retries $retries, passive breaker (no health check): 3 x wrk -t$WRK_THREADS -c$CONNECTIONS -d${PHASE}s; upstream 2 SIGKILLed ${KILL_DELAY}s into DURING"
    start_upstream "$name-up1" "$P_UP1"
    start_upstream "$name-up2" "$P_UP2"
    start_gateway "$name-gw" "$retries" "$OPEN_DURATION" "$(( $(sed 's/[a-z]*$//' <<<"$OPEN_DURATION") * 8 ))$(sed 's/^[0-9]*//' <<<"$OPEN_DURATION")"
    url="http://127.0.0.1:$P_GW/"
    b2="127.0.0.1:$P_UP2"
    local samples=$TMP/$name-samples.jsonl sampler kw watch_out=$TMP/$name-killwatch.txt
    # Background helpers run python3 directly (not through the tool function), so that
    # $! is python itself and a SIGTERM reaches it.
    python3 "$TOOL" sample "127.0.0.1:$P_ADMIN" "$samples" "$SAMPLE_INTERVAL" &
    sampler=$!
    bg_started "$sampler"
    local snap0 snap1
    snap0=$(snapshot)
    declare -A RES=()
    for p in BEFORE DURING AFTER; do
        out=$TMP/$name-wrk-$p.txt
        start_wrk "$PHASE" "$url" "$out"
        if [[ $p == DURING ]]; then
            sleep "$KILL_DELAY"
            # shellcheck disable=SC2086
            python3 "$TOOL" killwatch "127.0.0.1:$P_ADMIN" "$b2" "$(( PHASE + 2 ))" \
                "$(master_of "$name-up2")" ${WORKERS[$name-up2]} >"$watch_out" 2>&1 &
            kw=$!
            bg_started "$kw"
        fi
        rc=0
        wait_bg "$WRK_PID" || rc=$?
        (( rc == 0 )) || echo "   wrk exited $rc in $p (output in $out)" >&2
        RES[$p]=$(parse_wrk "$out")
        read -r rps p50 p99 non2xx sockerr reqs <<<"${RES[$p]}"
        printf '   %-7s %10s req/s  p50 %8s ms  p99 %8s ms  non-2xx %6s  socket errors %s\n' \
            "$p" "$rps" "$(fmt_ms "$p50")" "$(fmt_ms "$p99")" "$non2xx" "$sockerr"
        if [[ $p == DURING ]]; then wait_bg "$kw" || true; fi
    done
    kill -TERM "$sampler" 2>/dev/null || true
    wait_bg "$sampler" || true
    snap1=$(snapshot)
    local watch open_ms after_ms kill_wall polls max_poll
    watch=$(cat "$watch_out")
    open_ms=$(sed -n 's/^open_ms=\([^ ]*\).*/\1/p' <<<"$watch")
    after_ms=$(sed -n 's/.* after_ms=\([^ ]*\).*/\1/p' <<<"$watch")
    kill_wall=$(sed -n 's/.* kill_wall=\([^ ]*\).*/\1/p' <<<"$watch")
    polls=$(sed -n 's/.* polls=\([^ ]*\).*/\1/p' <<<"$watch")
    max_poll=$(sed -n 's/.* max_poll_ms=\([^ ]*\).*/\1/p' <<<"$watch")
    [[ -n $open_ms ]] || { open_ms=NA; echo "   killwatch failed: $watch" >&2; }

    local s200 s502 s503 s504 s100 short
    s100=$(( $(kv 0 "$snap1") - $(kv 0 "$snap0") ))
    s200=$(( $(kv 200 "$snap1") - $(kv 200 "$snap0") ))
    s502=$(( $(kv 502 "$snap1") - $(kv 502 "$snap0") ))
    s503=$(( $(kv 503 "$snap1") - $(kv 503 "$snap0") ))
    s504=$(( $(kv 504 "$snap1") - $(kv 504 "$snap0") ))
    short=$(( $(kv short "$snap1") - $(kv short "$snap0") ))
    sum "## one of two dies, route retries: $retries, passive breaker only (consecutive_failures $CONSECUTIVE, open_duration $OPEN_DURATION), wrk -t$WRK_THREADS -c$CONNECTIONS --latency, 3 x ${PHASE}s"
    sum "   phase      req/s     p50 ms     p99 ms   non-2xx  socket-err  requests"
    for p in BEFORE DURING AFTER; do
        read -r rps p50 p99 non2xx sockerr reqs <<<"${RES[$p]}"
        sum "$(printf '   %-7s %9s %10s %10s %9s %11s %9s' "$p" "$(calc "printf \"%.0f\", ${rps/NA/0}")" "$(fmt_ms "$p50")" "$(fmt_ms "$p99")" "$non2xx" "$sockerr" "$reqs")"
    done
    sum "   kill -> breaker of upstream 2 open (/metrics polled every 10 ms under load): ${open_ms} ms  (opened between ${after_ms} and ${open_ms} ms; $polls polls, slowest ${max_poll} ms)"
    sum "   gateway counters over the 3 phases: 200 $s200, 502 $s502, 503 $s503, 504 $s504, no response (client gone, label status=\"0\") $s100; short-circuited (503 at once) $short"
    sum "   breaker transitions: $(sed -n 's/.*trans=//p' <<<"$snap1" | tr ';' '\n' | sed "s/^127.0.0.1:$P_UP1 /up1 /; s/^127.0.0.1:$P_UP2 /up2 /" | paste -sd ',' | sed 's/,/, /g')"
    if [[ -n $kill_wall ]]; then
        sum "   per-second responses (gateway_requests_total, sampled every ${SAMPLE_INTERVAL}s; second 0 starts at the kill):"
        tool timeline "$samples" "$kill_wall" "127.0.0.1:$P_UP1" "127.0.0.1:$P_UP2" | tee -a "$SUMMARY"
    fi
    stop_prefix "$name-"
}

# ---------------------------------------------------------------- health check, no traffic
scenario_hc() {
    local name=hc watch open_ms after_ms polls max_poll
    take_ports
    echo "== one of two dies, active health check (interval $HC_INTERVAL, timeout $HC_TIMEOUT, unhealthy_threshold $HC_UNHEALTHY), no traffic"
    start_upstream "$name-up1" "$P_UP1"
    start_upstream "$name-up2" "$P_UP2"
    start_gateway "$name-gw" 1 "$OPEN_DURATION" 60s +HC
    sleep 0.5 # no traffic from here on (the start-up checks were the last requests)
    # shellcheck disable=SC2086
    watch=$(tool killwatch "127.0.0.1:$P_ADMIN" "127.0.0.1:$P_UP2" "$HC_WAIT" \
        "$(master_of "$name-up2")" ${WORKERS[$name-up2]})
    open_ms=$(sed -n 's/^open_ms=\([^ ]*\).*/\1/p' <<<"$watch")
    after_ms=$(sed -n 's/.* after_ms=\([^ ]*\).*/\1/p' <<<"$watch")
    polls=$(sed -n 's/.* polls=\([^ ]*\).*/\1/p' <<<"$watch")
    max_poll=$(sed -n 's/.* max_poll_ms=\([^ ]*\).*/\1/p' <<<"$watch")
    [[ -n $open_ms ]] || { open_ms=NA; echo "   killwatch failed: $watch" >&2; }
    local snap up2_healthy
    snap=$(snapshot)
    up2_healthy=$(metrics_at "$P_ADMIN" 2 |
        awk -v b="127.0.0.1:$P_UP2" '/^gateway_upstream_healthy\{/ && index($0, "backend=\"" b "\"") { v = $NF } END { print (v == "" ? "NA" : v) }')
    sum "## one of two dies, active health check (interval $HC_INTERVAL, timeout $HC_TIMEOUT, unhealthy_threshold $HC_UNHEALTHY), no traffic"
    sum "   kill -> breaker of upstream 2 open (/metrics polled every 10 ms): ${open_ms} ms  (opened between ${after_ms} and ${open_ms} ms; $polls polls, slowest ${max_poll} ms; expected: $(( HC_UNHEALTHY - 1 )) to $HC_UNHEALTHY check intervals of $HC_INTERVAL)"
    sum "   afterwards: gateway_upstream_healthy of upstream 2 = $up2_healthy; transitions: $(sed -n 's/.*trans=//p' <<<"$snap" | tr ';' '\n' | sed "s/^127.0.0.1:$P_UP1 /up1 /; s/^127.0.0.1:$P_UP2 /up2 /" | paste -sd ',' | sed 's/,/, /g')"
    stop_prefix "$name-"
}

# ---------------------------------------------------------------- all down
scenario_alldown() {
    local name=down url i st1 st2 n=0
    take_ports
    echo "== all down: both upstreams SIGKILLed, breakers tripped by requests (open_duration $ALLDOWN_OPEN, no health check), then wrk -t$WRK_THREADS -c$CONNECTIONS -d${ALLDOWN_DURATION}s"
    start_upstream "$name-up1" "$P_UP1"
    start_upstream "$name-up2" "$P_UP2"
    start_gateway "$name-gw" 1 "$ALLDOWN_OPEN" 120s
    url="http://127.0.0.1:$P_GW/"
    # shellcheck disable=SC2086
    kill -KILL "$(master_of "$name-up1")" "$(master_of "$name-up2")" ${WORKERS[$name-up1]} ${WORKERS[$name-up2]} 2>/dev/null || true
    sleep 0.1
    # Trip both breakers: each GET fails on one backend and its retry on the other.
    local codes=()
    for (( i = 0; i < 20 * CONSECUTIVE; i++ )); do
        st1=$(breaker_state "127.0.0.1:$P_UP1")
        st2=$(breaker_state "127.0.0.1:$P_UP2")
        [[ $st1 == 1 && $st2 == 1 ]] && break
        codes+=("$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 "$url" || true)")
        n=$(( n + 1 ))
    done
    [[ $st1 == 1 && $st2 == 1 ]] || die "all down: breakers not both open after $n requests (states $st1/$st2)"
    echo "   both breakers open after $n request(s) (statuses: ${codes[*]})"

    # Count connection attempts on the dead upstreams' ports during the run.
    local l1 l2 deadline
    python3 "$TOOL" listen "$P_UP1" "$TMP/$name-listen1.ready" >"$TMP/$name-listen1.out" 2>&1 &
    l1=$!
    bg_started "$l1"
    python3 "$TOOL" listen "$P_UP2" "$TMP/$name-listen2.ready" >"$TMP/$name-listen2.out" 2>&1 &
    l2=$!
    bg_started "$l2"
    deadline=$(( SECONDS + READY_TIMEOUT ))
    until [[ -f $TMP/$name-listen1.ready && -f $TMP/$name-listen2.ready ]]; do
        alive "$l1" && alive "$l2" || die "all down: a counting listener exited: $(cat "$TMP/$name-listen"*.out)"
        (( SECONDS < deadline )) || die "all down: counting listeners not ready"
        sleep 0.05
    done

    local snap0 snap1 out=$TMP/$name-wrk.txt rc=0
    snap0=$(snapshot)
    start_wrk "$ALLDOWN_DURATION" "$url" "$out"
    wait_bg "$WRK_PID" || rc=$?
    (( rc == 0 )) || echo "   wrk exited $rc (output in $out)" >&2
    snap1=$(snapshot)
    st1=$(breaker_state "127.0.0.1:$P_UP1")
    st2=$(breaker_state "127.0.0.1:$P_UP2")
    kill -TERM "$l1" "$l2" 2>/dev/null || true
    wait_bg "$l1" || true
    wait_bg "$l2" || true
    local c1 c2
    c1=$(sed -n 's/^accepted=//p' "$TMP/$name-listen1.out")
    c2=$(sed -n 's/^accepted=//p' "$TMP/$name-listen2.out")
    [[ -n $c1 && -n $c2 ]] || echo "   a counting listener printed no count: $(cat "$TMP/$name-listen"*.out)" >&2
    c1=${c1:-NA}
    c2=${c2:-NA}

    # Control: the same load on the gateway's own /ping (answered by the gateway, no
    # upstream either): the floor of what this machine gives for a trivial response.
    local crps cp50 cp99 cnon2xx csockerr creqs cout=$TMP/$name-wrk-ping.txt
    if [[ $ALLDOWN_CONTROL == 1 ]]; then
        rc=0
        start_wrk "$ALLDOWN_DURATION" "http://127.0.0.1:$P_GW/ping" "$cout"
        wait_bg "$WRK_PID" || rc=$?
        (( rc == 0 )) || echo "   wrk exited $rc on /ping (output in $cout)" >&2
        read -r crps cp50 cp99 cnon2xx csockerr creqs < <(parse_wrk "$cout")
    fi

    local rps p50 p99 non2xx sockerr reqs s503 s200 other short
    read -r rps p50 p99 non2xx sockerr reqs < <(parse_wrk "$out")
    s503=$(( $(kv 503 "$snap1") - $(kv 503 "$snap0") ))
    s200=$(( $(kv 200 "$snap1") - $(kv 200 "$snap0") ))
    short=$(( $(kv short "$snap1") - $(kv short "$snap0") ))
    other=$(( $(statuses_except 503 "$snap1") - $(statuses_except 503 "$snap0") ))
    local ok_p99=0 ok_c=0 v_p v_c
    [[ $p99 != NA ]] && ok_p99=$(calc "print ($p99 < $ALLDOWN_P99_MAX_MS ? 1 : 0)")
    [[ $c1 != NA && $c2 != NA ]] && (( c1 + c2 <= ALLDOWN_CONNECTS_MAX )) && ok_c=1
    verdict "$ok_p99" alldown-p99
    v_p=$V
    verdict "$ok_c" alldown-connects
    v_c=$V
    sum "## all down (both upstreams dead, breakers open, open_duration $ALLDOWN_OPEN, no health check), wrk -t$WRK_THREADS -c$CONNECTIONS -d${ALLDOWN_DURATION}s --latency"
    sum "   breakers tripped by $n request(s) (statuses: ${codes[*]}); states after the run: up1 $st1, up2 $st2 (1 = open)"
    sum "   responses:   $reqs requests, $(calc "printf \"%.0f\", ${rps/NA/0}") req/s; wrk non-2xx $non2xx, socket errors $sockerr"
    sum "   by gateway:  503 $s503 (short-circuited $short), 200 $s200, other statuses $other"
    sum "   503 latency: p50 $(fmt_ms "$p50") ms, p99 $(fmt_ms "$p99") ms  (target p99 < $ALLDOWN_P99_MAX_MS ms: $v_p)"
    sum "   connections accepted on the dead upstreams' ports during the run: up1 $c1, up2 $c2  (target $ALLDOWN_CONNECTS_MAX: $v_c)"
    if [[ $ALLDOWN_CONTROL == 1 ]]; then
        sum "   control, same wrk on GET /ping (200 from the gateway itself, after the run above): $(calc "printf \"%.0f\", ${crps/NA/0}") req/s, p50 $(fmt_ms "$cp50") ms, p99 $(fmt_ms "$cp99") ms, non-2xx $cnon2xx, socket errors $csockerr"
    fi
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

for f in "$TMP"/*-gw.log; do
    [[ -f $f ]] || continue
    log_summary "$(basename "$f" .log)" "$f" 5 1
done
show_load end

sum_verdict

results_begin breaker-
{
    results_header "gateway circuit-breaker test" \
        "scenarios=${SCENARIO_LIST[*]} duration_s=$DURATION phase_s=$PHASE alldown_duration_s=$ALLDOWN_DURATION connections=$CONNECTIONS wrk_threads=$WRK_THREADS gateway_threads=$THREADS kill_delay_s=$KILL_DELAY consecutive_failures=$CONSECUTIVE open_duration=$OPEN_DURATION" \
        "cpus=$(nproc) nginx=$(nginx_version) wrk=$(wrk_version)"
    echo "tmp_dir=$TMP"
    cat "$SUMMARY"
} >"$RESULT"
echo
echo "== summary written to $RESULT"
