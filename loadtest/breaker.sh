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

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

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
GATEWAY_BIN=${GATEWAY_BIN:-}
RESULTS_DIR=${RESULTS_DIR:-$SCRIPT_DIR/results}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
READY_TIMEOUT=10       # seconds to wait for each server to answer
SAMPLE_INTERVAL=0.1    # seconds between /metrics samples for the timelines
ALLDOWN_OPEN=60s       # open_duration in "all down": no half-open trial during the run
HC_INTERVAL=1s
HC_TIMEOUT=500ms
HC_UNHEALTHY=2

# Targets.
ALLDOWN_P99_MAX_MS=1   # p99 of the 503s
ALLDOWN_CONNECTS_MAX=0 # connections to the dead upstreams during the run

die() { echo "breaker.sh: $*" >&2; exit 1; }
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

for v in DURATION ALLDOWN_DURATION CONNECTIONS WRK_THREADS THREADS CONSECUTIVE HC_WAIT; do
    is_uint "${!v}" && (( ${!v} > 0 )) || die "$v must be a positive integer, got '${!v}'"
done
[[ $ALLDOWN_CONTROL == [01] ]] || die "ALLDOWN_CONTROL must be 0 or 1, got '$ALLDOWN_CONTROL'"
(( DURATION >= 3 )) || die "DURATION must be at least 3 (three phases of at least 1 s), got $DURATION"
[[ $KILL_DELAY =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "KILL_DELAY must be a number of seconds, got '$KILL_DELAY'"
[[ $OPEN_DURATION =~ ^[0-9]+(ms|s|m)$ ]] || die "OPEN_DURATION must look like 5s, 500ms or 1m, got '$OPEN_DURATION'"
(( WRK_THREADS <= CONNECTIONS )) || WRK_THREADS=$CONNECTIONS
PHASE=$(( DURATION / 3 ))
awk -v k="$KILL_DELAY" -v p="$PHASE" 'BEGIN { exit !(k < p) }' \
    || die "KILL_DELAY ($KILL_DELAY s) must be shorter than a phase ($PHASE s)"

read -r -a SCENARIO_LIST <<<"${SCENARIOS//,/ }"
(( ${#SCENARIO_LIST[@]} > 0 )) || die "SCENARIOS is empty"
for s in "${SCENARIO_LIST[@]}"; do
    case $s in retries1 | retries0 | hc | alldown) ;; *) die "unknown scenario '$s' (choose from: retries1 retries0 hc alldown)" ;; esac
done

for tool in wrk curl python3 timeout "$NGINX"; do
    command -v "$tool" >/dev/null || die "'$tool' not found"
done

# ---------------------------------------------------------------- processes & cleanup
TMP=$(mktemp -d "${TMPDIR:-/tmp}/gateway-breaker.XXXXXX")
declare -a PROC_NAMES=() PROC_PIDS=() BG_PIDS=()

alive() { # pid: running (a zombie not yet reaped does not count)
    local st
    st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ -n $st && $st != Z* ]]
}

# SIGTERM to the given pids (newest first), SIGKILL to what is left after 8 s.
stop_pids() { # pid...
    local i pid deadline any pids=("$@") kids=()
    for (( i = ${#pids[@]} - 1; i >= 0; i-- )); do
        pid=${pids[i]}
        alive "$pid" || continue
        # Remember the children (nginx workers) in case the master must be killed.
        # shellcheck disable=SC2207
        kids+=($(ps -o pid= --ppid "$pid" 2>/dev/null || true))
        kill -TERM "$pid" 2>/dev/null || true
    done
    deadline=$(( SECONDS + 8 ))
    while (( SECONDS < deadline )); do
        any=0
        for pid in "${pids[@]}" "${kids[@]}"; do alive "$pid" && any=1 && break; done
        (( any )) || break
        sleep 0.1
    done
    for pid in "${pids[@]}" "${kids[@]}"; do
        if alive "$pid"; then
            echo "breaker.sh: pid $pid did not stop after SIGTERM; sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}

# Stops the processes whose names start with PREFIX (and forgets them).
stop_prefix() { # prefix
    local i n pids=() keep_n=() keep_p=()
    for i in "${!PROC_PIDS[@]}"; do
        if [[ ${PROC_NAMES[i]} == "$1"* ]]; then
            pids+=("${PROC_PIDS[i]}")
        else
            keep_n+=("${PROC_NAMES[i]}")
            keep_p+=("${PROC_PIDS[i]}")
        fi
    done
    PROC_NAMES=("${keep_n[@]}")
    PROC_PIDS=("${keep_p[@]}")
    (( ${#pids[@]} == 0 )) || stop_pids "${pids[@]}"
    for n in "${!WORKERS[@]}"; do [[ $n == "$1"* ]] && unset "WORKERS[$n]"; done
    return 0
}

# nginx workers: the children of the master, recorded at start so they can be killed.
declare -A WORKERS=()

cleanup() {
    local rc=$? pid all=()
    trap '' INT TERM HUP # let the clean-up finish; it is bounded (~8 s)
    trap - EXIT
    set +e
    # Background helpers (wrk under timeout, samplers, watchers, listeners) first, then
    # gateways, then the upstreams (newest first), and any nginx worker left behind.
    all=("${PROC_PIDS[@]}" "${BG_PIDS[@]}")
    for pid in ${WORKERS[@]+"${WORKERS[@]}"}; do
        # Only a live nginx (a worker whose master was killed): never another process
        # that reused the pid.
        [[ $(ps -o comm= -p "$pid" 2>/dev/null) == nginx ]] && all=("$pid" "${all[@]}")
    done
    stop_pids "${all[@]}"
    rm -rf "$TMP/bin" # the private copy of the gateway binary
    echo "temp dir (configs, logs, raw wrk outputs, /metrics samples): $TMP" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "breaker.sh: interrupted" >&2; exit 130' INT
trap 'echo "breaker.sh: terminated" >&2; exit 143' TERM
trap 'echo "breaker.sh: hung up" >&2; exit 129' HUP

started() { PROC_NAMES+=("$1"); PROC_PIDS+=("$2"); }
bg_started() { BG_PIDS+=("$1"); }
bg_done() { # pid: forget a background helper that has ended
    local keep=() p
    for p in "${BG_PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    BG_PIDS=("${keep[@]}")
}

# Polls until URL answers 2xx (and, when EXPECT is given, with that body), the
# process dies, or READY_TIMEOUT passes.
wait_ready() { # name pid url [expected-body] [logfile]
    local name=$1 pid=$2 url=$3 expect=${4:-} log=${5:-} body
    local deadline=$(( SECONDS + READY_TIMEOUT ))
    while :; do
        if ! alive "$pid"; then
            echo "breaker.sh: $name (pid $pid) exited during start-up" >&2
            [[ -n $log && -f $log ]] && tail -n 20 "$log" >&2
            return 1
        fi
        if body=$(curl -fsS --max-time 1 "$url" 2>/dev/null) && [[ -z $expect || $body == "$expect" ]]; then
            return 0
        fi
        if (( SECONDS >= deadline )); then
            echo "breaker.sh: $name not ready at $url after ${READY_TIMEOUT}s" >&2
            [[ -n $log && -f $log ]] && tail -n 20 "$log" >&2
            return 1
        fi
        sleep 0.1
    done
}

# Same as run.sh: KEY=VALUE replaces @KEY@; +SECTION keeps the lines that start
# with "#+SECTION " (without the marker), lines of other sections are dropped.
render() { # template output [KEY=VALUE | +SECTION]...
    local tmpl=$1 out=$2 kv args=()
    shift 2
    for kv in "$@"; do
        if [[ $kv == +* ]]; then
            args+=(-e "s|^#${kv} ||")
        else
            args+=(-e "s|@${kv%%=*}@|${kv#*=}|g")
        fi
    done
    args+=(-e '/^#+[A-Z_]* /d')
    sed "${args[@]}" "$tmpl" >"$out"
    if grep -q '@[A-Z_]*@' "$out"; then die "unreplaced placeholder in $out: $(grep -o '@[A-Z_]*@' "$out" | sort -u | tr '\n' ' ')"; fi
}

now_s() { date +%s.%N; }
calc() { awk "BEGIN { $1 }"; } # calc 'printf "%.2f", 1 / 3'

# ---------------------------------------------------------------- set-up
echo "== circuit-breaker test: SCENARIOS='${SCENARIO_LIST[*]}' DURATION=${DURATION}s (3 x ${PHASE}s) ALLDOWN_DURATION=${ALLDOWN_DURATION}s CONNECTIONS=$CONNECTIONS WRK_THREADS=$WRK_THREADS THREADS=$THREADS"
echo "== temp dir: $TMP"
echo "== machine load (start): $(uptime)"
LOAD_START=$(uptime | sed 's/.*load average: //')

if [[ -z $GATEWAY_BIN ]]; then
    echo "== cargo build --release"
    (cd "$ROOT" && cargo build --release)
    GATEWAY_BIN=$ROOT/target/release/gateway
fi
[[ -x $GATEWAY_BIN ]] || die "gateway binary not found or not executable: $GATEWAY_BIN"
# Run a private copy, so a concurrent rebuild cannot swap it between runs.
mkdir -p "$TMP/bin"
cp "$GATEWAY_BIN" "$TMP/bin/gateway"
GW=$TMP/bin/gateway
echo "== gateway binary: $GATEWAY_BIN ($("$GW" --version 2>/dev/null | head -n 1 || true))"

TOOL=$TMP/breaker_tool.py
cp "$SCRIPT_DIR/breaker-tool.py.tmpl" "$TOOL"
tool() { python3 "$TOOL" "$@"; }

# Four distinct free loopback ports per scenario (upstream 1, upstream 2, gateway,
# admin), held open together while they are chosen.
NPORTS=$(( 4 * ${#SCENARIO_LIST[@]} ))
ports=$(python3 -c '
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
' "$NPORTS")
read -r -a PORTS <<<"$ports"
(( ${#PORTS[@]} == NPORTS )) || die "could not get $NPORTS free ports"
NEXT_PORT=0
take_ports() { # sets P_UP1 P_UP2 P_GW P_ADMIN
    P_UP1=${PORTS[NEXT_PORT]}
    P_UP2=${PORTS[NEXT_PORT + 1]}
    P_GW=${PORTS[NEXT_PORT + 2]}
    P_ADMIN=${PORTS[NEXT_PORT + 3]}
    NEXT_PORT=$(( NEXT_PORT + 4 ))
}

if (( EUID == 0 )); then USER_DIRECTIVE="user root;"; else USER_DIRECTIVE=""; fi

# One nginx upstream (1 worker, `return 200 "ok\n"`) from the shared template, in a
# directory of its own (the template's pid file and temp paths are fixed names).
start_upstream() { # name port
    local name=$1 port=$2 dir=$TMP/$1 d pid
    for d in body proxy fastcgi uwsgi scgi; do mkdir -p "$dir/nginx-upstream-tmp/$d"; done
    mkdir -p "$dir/prefix"
    render "$SCRIPT_DIR/nginx-upstream.conf.tmpl" "$dir/nginx.conf" DIR="$dir" PORT="$port" \
        USER_DIRECTIVE="$USER_DIRECTIVE"
    grep -q 'worker_processes 1;' "$dir/nginx.conf" || die "$name: expected 'worker_processes 1;' in $dir/nginx.conf"
    "$NGINX" -t -q -p "$dir/prefix/" -c "$dir/nginx.conf" -e "$dir/error.log" \
        || die "$name: nginx -t failed for $dir/nginx.conf"
    "$NGINX" -p "$dir/prefix/" -c "$dir/nginx.conf" -e "$dir/error.log" >"$dir/nginx.out" 2>&1 &
    pid=$!
    # Disowned: the scenarios SIGKILL it, and bash would print a "Killed" job notice.
    # (bash still reaps it; alive() and stop_pids work the same.)
    disown "$pid"
    started "$name" "$pid"
    wait_ready "$name" "$pid" "http://127.0.0.1:$port/" ok "$dir/error.log"
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
    local name=$1 conf=$TMP/$1.yaml log=$TMP/$1.log check pid
    render "$SCRIPT_DIR/breaker-gateway.yaml.tmpl" "$conf" DIR="$TMP" NAME="$name" \
        PORT="$P_GW" ADMIN_PORT="$P_ADMIN" THREADS="$THREADS" UP1_PORT="$P_UP1" UP2_PORT="$P_UP2" \
        RETRIES="$2" CONSECUTIVE="$CONSECUTIVE" OPEN_DURATION="$3" MAX_OPEN="$4" \
        HC_INTERVAL="$HC_INTERVAL" HC_TIMEOUT="$HC_TIMEOUT" HC_UNHEALTHY="$HC_UNHEALTHY" "${@:5}"
    check=$("$GW" --check-config "$conf" 2>&1) || die "$name: invalid config $conf: $check"
    [[ $check == ok ]] || die "$name: '$GW --check-config' printed '$check', not 'ok' (is it a real gateway build?)"
    "$GW" -c "$conf" >"$log" 2>&1 &
    pid=$!
    started "$name" "$pid"
    wait_ready "$name /readyz" "$pid" "http://127.0.0.1:$P_ADMIN/readyz" "" "$log"
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
    curl -fsS --max-time 2 "http://127.0.0.1:$P_ADMIN/metrics" 2>/dev/null |
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

# wrk output -> "rps p50_ms p99_ms non2xx socket_errors requests" (NA when missing)
parse_wrk() {
    awk '
        function ms(v,   n, u) {
            n = v; sub(/[a-z]+$/, "", n)
            u = v; sub(/^[0-9.]+/, "", u)
            if (u == "us") return n / 1000
            if (u == "ms") return n + 0
            if (u == "s")  return n * 1000
            if (u == "m")  return n * 60000
            if (u == "h")  return n * 3600000
            return "NA"
        }
        /Latency Distribution/ { dist = 1; next }
        dist && $1 == "50%" { p50 = ms($2) }
        dist && $1 == "99%" { p99 = ms($2); dist = 0 }
        /requests in/ { reqs = $1 }
        /^Requests\/sec:/ { rps = $2 }
        /Non-2xx or 3xx responses:/ { non2xx = $NF }
        /Socket errors:/ { gsub(",", ""); sockerr = $4 + $6 + $8 + $10 }
        END {
            printf "%s %s %s %d %d %s\n", (rps == "" ? "NA" : rps), (p50 == "" ? "NA" : p50),
                (p99 == "" ? "NA" : p99), non2xx, sockerr, (reqs == "" ? "NA" : reqs)
        }' "$1"
}

# Starts wrk in the background under a hard timeout; WRK_PID is its pid. Waiting for
# it (not running it in the foreground) lets a Ctrl-C run the INT trap at once.
start_wrk() { # seconds url outfile
    timeout -k 5 $(( $1 + 20 )) \
        wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$1"s --latency "$2" >"$3" 2>&1 &
    WRK_PID=$!
    bg_started "$WRK_PID"
}
wait_bg() { # pid: wait for a background helper; its exit status
    local rc=0
    wait "$1" || rc=$?
    bg_done "$1"
    return "$rc"
}

SUMMARY=$TMP/summary.txt
: >"$SUMMARY"
MISSED=()
sum() { echo "$*" | tee -a "$SUMMARY"; }
verdict() { # 1-if-met label  (sets V; not in $(...): that would lose MISSED in a subshell)
    if [[ $1 == 1 ]]; then V=ok; else MISSED+=("$2"); V=MISSED; fi
}
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
    s100=$(( $(kv 100 "$snap1") - $(kv 100 "$snap0") ))
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
    sum "   gateway counters over the 3 phases: 200 $s200, 502 $s502, 503 $s503, 504 $s504, no response (client gone, label status=\"100\") $s100; short-circuited (503 at once) $short"
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
    up2_healthy=$(curl -fsS --max-time 2 "http://127.0.0.1:$P_ADMIN/metrics" |
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
    n=$(grep -cE ' (WARN|ERROR) ' "$f" || true)
    if (( n > 0 )); then
        echo "== $(basename "$f" .log) log: $n warning/error line(s), most frequent ($f):"
        # (awk, not head: head closing the pipe early would SIGPIPE sort, and pipefail
        # would end the script before the results are written.)
        grep -E ' (WARN|ERROR) ' "$f" | sed -E 's/^\[[^ ]+ //; s/ request_id=[^ ]*//; s/[0-9]+/N/g' |
            sort | uniq -c | sort -rn | awk 'NR <= 5' | cut -c1-200 | sed 's/^ */   /' || true
    fi
done
echo "== machine load (end): $(uptime)"

if (( ${#MISSED[@]} == 0 )); then
    sum "## verdict: every target met"
else
    sum "## verdict: ${#MISSED[@]} target(s) missed: ${MISSED[*]}"
fi

mkdir -p "$RESULTS_DIR"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
RESULT=$RESULTS_DIR/breaker-$stamp.txt
{
    echo "# gateway circuit-breaker test $stamp"
    echo "git_rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo NA)$(git -C "$ROOT" diff --quiet HEAD -- src 2>/dev/null || echo '+dirty')"
    echo "gateway_bin=$GATEWAY_BIN"
    echo "scenarios=${SCENARIO_LIST[*]} duration_s=$DURATION phase_s=$PHASE alldown_duration_s=$ALLDOWN_DURATION connections=$CONNECTIONS wrk_threads=$WRK_THREADS gateway_threads=$THREADS kill_delay_s=$KILL_DELAY consecutive_failures=$CONSECUTIVE open_duration=$OPEN_DURATION"
    echo "cpus=$(nproc) nginx=$("$NGINX" -v 2>&1 | sed 's|.*/||') wrk=$(wrk -v 2>&1 | awk 'NR == 1 { print $2 }')"
    echo "load_start=$LOAD_START"
    echo "load_end=$(uptime | sed 's/.*load average: //')"
    echo "tmp_dir=$TMP"
    cat "$SUMMARY"
} >"$RESULT"
echo
echo "== summary written to $RESULT"
