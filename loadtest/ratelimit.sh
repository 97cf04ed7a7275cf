#!/usr/bin/env bash
# Rate limiter with Redis: its Redis economy and its exactness, measured with the
# release binary on loopback. See loadtest/README.md ("Rate limiter: ratelimit.sh").
#
#   a) economy: one gateway, policy 1000/s burst 1000 on header X-Client, offered
#      far more than 1000 req/s of one key: Redis EVALSHA calls and lease round
#      trips per admitted request (target < 0.05), admitted/s.
#   b) exactness: four gateways sharing one bucket (1000/s, burst 100), one wrk each
#      at once: admitted over the four / (burst + rate x elapsed), target 0.95..1.00.
#   c) flood on an exhausted key (1 per hour, burst 1): requests, 429s, EVALSHA calls.
#
# Knobs (environment):
#   DURATION=10         seconds of wrk in a) and b)
#   FLOOD_DURATION=5    seconds of wrk in c)
#   PHASES="a b c"      which parts, in this order (spaces or commas)
#   THREADS=2           gateway server.threads
#   ACCESS_LOG=off      gateway access log (on|off), to a file in the temp dir
#   GATEWAY_BIN=...     use this binary instead of `cargo build --release`
#   RESULTS_DIR=loadtest/results   where the summary file goes
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

DURATION=${DURATION:-10}
FLOOD_DURATION=${FLOOD_DURATION:-5}
PHASES=${PHASES:-a b c}
THREADS=${THREADS:-2}
ACCESS_LOG=${ACCESS_LOG:-off}
GATEWAY_BIN=${GATEWAY_BIN:-}
RESULTS_DIR=${RESULTS_DIR:-$SCRIPT_DIR/results}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
REDIS_SERVER=${REDIS_SERVER:-$(command -v redis-server || echo /usr/bin/redis-server)}
REDIS_CLI=${REDIS_CLI:-$(command -v redis-cli || echo /usr/bin/redis-cli)}
READY_TIMEOUT=10 # seconds to wait for each server to answer
IDLE_SETTLE=2    # seconds after the load before the "after" snapshot: idle leases go back
                 # to Redis after idle_return (1 s) and a sweep (every 0.5 s)

# Targets.
MAX_PER_ADMITTED=0.05 # a) EVALSHA calls and round trips per admitted request
EXACT_MIN=0.95        # b) admitted / allowed
EXACT_MAX=1.00
FLOOD_MAX_EVALSHA=10  # c) EVALSHA calls during the whole flood

die() { echo "ratelimit.sh: $*" >&2; exit 1; }
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

for v in DURATION FLOOD_DURATION THREADS; do
    is_uint "${!v}" && (( ${!v} > 0 )) || die "$v must be a positive integer, got '${!v}'"
done
case $ACCESS_LOG in
    on | off) ;;
    *) die "ACCESS_LOG must be on or off, got '$ACCESS_LOG'" ;;
esac
read -r -a PHASE_LIST <<<"${PHASES//,/ }"
(( ${#PHASE_LIST[@]} > 0 )) || die "PHASES is empty"
for p in "${PHASE_LIST[@]}"; do
    case $p in a | b | c) ;; *) die "unknown phase '$p' (choose from: a b c)" ;; esac
done

for tool in wrk curl python3 timeout "$NGINX" "$REDIS_SERVER" "$REDIS_CLI"; do
    command -v "$tool" >/dev/null || die "'$tool' not found"
done

# ---------------------------------------------------------------- processes & cleanup
TMP=$(mktemp -d "${TMPDIR:-/tmp}/gateway-ratelimit.XXXXXX")
declare -a PROC_NAMES=() PROC_PIDS=() WRK_PIDS=()

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
            echo "ratelimit.sh: pid $pid did not stop after SIGTERM; sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}

# Stops the processes named NAME... (and forgets them).
stop_named() { # name...
    local i n pids=() keep_n=() keep_p=()
    for i in "${!PROC_PIDS[@]}"; do
        local hit=0
        for n in "$@"; do [[ ${PROC_NAMES[i]} == "$n" ]] && hit=1; done
        if (( hit )); then pids+=("${PROC_PIDS[i]}"); else keep_n+=("${PROC_NAMES[i]}"); keep_p+=("${PROC_PIDS[i]}"); fi
    done
    PROC_NAMES=("${keep_n[@]}")
    PROC_PIDS=("${keep_p[@]}")
    (( ${#pids[@]} == 0 )) || stop_pids "${pids[@]}"
}

cleanup() {
    local rc=$? pid
    trap '' INT TERM HUP # let the clean-up finish; it is bounded (~8 s)
    trap - EXIT
    set +e
    for pid in "${WRK_PIDS[@]}"; do
        alive "$pid" && kill -TERM "$pid" 2>/dev/null # timeout passes it on to wrk
    done
    # Newest first: gateways (they give their leases back), Redis, the upstream.
    stop_pids "${WRK_PIDS[@]}" "${PROC_PIDS[@]}"
    rm -f "$TMP"/*-access.log
    rm -rf "$TMP/bin" # the private copy of the gateway binary
    echo "temp dir (configs, logs, raw wrk outputs): $TMP" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "ratelimit.sh: interrupted" >&2; exit 130' INT
trap 'echo "ratelimit.sh: terminated" >&2; exit 143' TERM
trap 'echo "ratelimit.sh: hung up" >&2; exit 129' HUP

started() { PROC_NAMES+=("$1"); PROC_PIDS+=("$2"); }

# Polls until URL answers 2xx (and, when EXPECT is given, with that body), the
# process dies, or READY_TIMEOUT passes.
wait_ready() { # name pid url [expected-body] [logfile]
    local name=$1 pid=$2 url=$3 expect=${4:-} log=${5:-} body
    local deadline=$(( SECONDS + READY_TIMEOUT ))
    while :; do
        if ! alive "$pid"; then
            echo "ratelimit.sh: $name (pid $pid) exited during start-up" >&2
            [[ -n $log && -f $log ]] && tail -n 20 "$log" >&2
            return 1
        fi
        if body=$(curl -fsS --max-time 1 "$url" 2>/dev/null) && [[ -z $expect || $body == "$expect" ]]; then
            return 0
        fi
        if (( SECONDS >= deadline )); then
            echo "ratelimit.sh: $name not ready at $url after ${READY_TIMEOUT}s" >&2
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
echo "== rate limiter test: PHASES='${PHASE_LIST[*]}' DURATION=${DURATION}s FLOOD_DURATION=${FLOOD_DURATION}s THREADS=$THREADS ACCESS_LOG=$ACCESS_LOG"
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

# Fourteen distinct free loopback ports, held open together while they are chosen:
# upstream, Redis, and a proxy + admin port for each of six gateways.
ports=$(python3 -c '
import socket
socks = []
for _ in range(14):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
')
read -r -a PORTS <<<"$ports"
P_UPSTREAM=${PORTS[0]}
P_REDIS=${PORTS[1]}
declare -A PORT ADMIN_PORT
i=2
for g in gw-a gw-b1 gw-b2 gw-b3 gw-b4 gw-c; do
    PORT[$g]=${PORTS[i]}
    ADMIN_PORT[$g]=${PORTS[i + 1]}
    i=$(( i + 2 ))
done

if (( EUID == 0 )); then USER_DIRECTIVE="user root;"; else USER_DIRECTIVE=""; fi

start_upstream() {
    local name=nginx-upstream d
    for d in body proxy fastcgi uwsgi scgi; do mkdir -p "$TMP/$name-tmp/$d"; done
    mkdir -p "$TMP/$name-prefix"
    render "$SCRIPT_DIR/nginx-upstream.conf.tmpl" "$TMP/$name.conf" DIR="$TMP" NAME="$name" \
        PORT="$P_UPSTREAM" USER_DIRECTIVE="$USER_DIRECTIVE"
    "$NGINX" -t -q -p "$TMP/$name-prefix/" -c "$TMP/$name.conf" -e "$TMP/$name-error.log" \
        || die "$name: nginx -t failed for $TMP/$name.conf"
    "$NGINX" -p "$TMP/$name-prefix/" -c "$TMP/$name.conf" -e "$TMP/$name-error.log" \
        >"$TMP/$name.out" 2>&1 &
    started "$name" $!
    wait_ready "$name" $! "http://127.0.0.1:$P_UPSTREAM/" ok "$TMP/$name-error.log"
    echo "== $name: nginx on 127.0.0.1:$P_UPSTREAM"
}

start_redis() {
    local name=redis pid deadline=$(( SECONDS + READY_TIMEOUT ))
    "$REDIS_SERVER" --port "$P_REDIS" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$TMP" --logfile "$TMP/$name.log" --daemonize no >"$TMP/$name.out" 2>&1 &
    pid=$!
    started "$name" "$pid"
    until [[ $(rcli ping 2>/dev/null) == PONG ]]; do
        if ! alive "$pid"; then
            echo "ratelimit.sh: $name (pid $pid) exited during start-up" >&2
            tail -n 20 "$TMP/$name.log" "$TMP/$name.out" >&2 2>/dev/null
            return 1
        fi
        (( SECONDS < deadline )) || die "$name not ready on 127.0.0.1:$P_REDIS after ${READY_TIMEOUT}s"
        sleep 0.1
    done
    echo "== $name: pid $pid on 127.0.0.1:$P_REDIS ($("$REDIS_SERVER" --version | awk '{ print $3 }'))"
}
rcli() { "$REDIS_CLI" -h 127.0.0.1 -p "$P_REDIS" "$@"; }
evalsha_calls() { # Redis's count of EVALSHA commands: one per key per lease round trip
    rcli info commandstats | awk -F'[:=,]' '/^cmdstat_evalsha:/ { n = $3 } END { print n + 0 }'
}

# Renders, validates and starts one gateway with Redis and one policy; waits for
# /readyz, then checks that a request (X-Client: CHECK_KEY) is proxied ("ok") and
# went through the limiter (RateLimit header) without a fallback.
start_gateway() { # name policy rate per burst instances check-key
    local name=$1 policy=$2 conf=$TMP/$1.yaml log=$TMP/$1.log enabled=true check pid hdrs body rl snap s
    [[ $ACCESS_LOG == on ]] || enabled=false
    render "$SCRIPT_DIR/gateway.yaml.tmpl" "$conf" +LIMITED +REDIS DIR="$TMP" NAME="$name" \
        PORT="${PORT[$name]}" ADMIN_PORT="${ADMIN_PORT[$name]}" THREADS="$THREADS" \
        UPSTREAM_PORT="$P_UPSTREAM" REDIS_PORT="$P_REDIS" \
        ACCESS_LOG_ENABLED="$enabled" ACCESS_LOG_FILE="$TMP/$name-access.log" \
        POLICY="$policy" RATE="$3" PER="$4" BURST="$5" INSTANCES="$6" KEY="header:X-Client"
    check=$("$GW" --check-config "$conf" 2>&1) || die "$name: invalid config $conf: $check"
    [[ $check == ok ]] || die "$name: '$GW --check-config' printed '$check', not 'ok' (is it a real gateway build?)"
    "$GW" -c "$conf" >"$log" 2>&1 &
    pid=$!
    started "$name" "$pid"
    wait_ready "$name /readyz" "$pid" "http://127.0.0.1:${ADMIN_PORT[$name]}/readyz" "" "$log"
    hdrs=$TMP/check-$name.headers
    body=$(curl -sS --max-time 5 -D "$hdrs" -H "X-Client: $7" "http://127.0.0.1:${PORT[$name]}/loadtest-check") \
        || die "$name check request failed"
    [[ $body == ok ]] || die "$name check: expected body 'ok', got '$body' (headers in $hdrs)"
    rl=$(awk 'tolower($1) == "ratelimit:" { print $2 }' "$hdrs" | tr -d '\r')
    [[ -n $rl ]] || die "$name check: no RateLimit response header: is the limiter on? (headers in $hdrs)"
    snap=$(snapshot "$name")
    read -r -a s <<<"$snap"
    (( s[2] == 0 )) || die "$name check: a fallback decision: Redis not used (see $log)"
    (( s[3] > 0 )) || die "$name check: no Redis round trip in /metrics"
    echo "== $name: pid $pid on 127.0.0.1:${PORT[$name]} (admin ${ADMIN_PORT[$name]}), policy $policy: $3 per $4, burst $5; check ok, RateLimit: $rl"
}

# "allowed limited fallback round_trips status_429 status_5xx requests redis_errors",
# summed over the given gateways' /metrics.
snapshot() { # gateway...
    local g m
    for g in "$@"; do
        m=$(curl -fsS --max-time 5 "http://127.0.0.1:${ADMIN_PORT[$g]}/metrics") \
            || die "could not read $g's /metrics"
        printf '%s\n' "$m"
    done | awk '
        /^gateway_ratelimit_decisions_total\{/ && /outcome="allowed"/ { a += $NF }
        /^gateway_ratelimit_decisions_total\{/ && /outcome="limited"/ { l += $NF }
        /^gateway_ratelimit_decisions_total\{/ && /outcome="fallback"/ { f += $NF }
        /^gateway_ratelimit_redis_round_trips_total / { t += $NF }
        /^gateway_ratelimit_redis_errors_total / { e += $NF }
        /^gateway_requests_total\{/ { n += $NF }
        /^gateway_requests_total\{/ && /status="429"/ { r429 += $NF }
        /^gateway_requests_total\{/ && /status="5[0-9][0-9]"/ { r5 += $NF }
        END { printf "%.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f\n", a, l, f, t, r429, r5, n, e }'
}
# after - before, field by field
delta() { awk -v a="$1" -v b="$2" 'BEGIN { n = split(a, x, " "); split(b, y, " "); for (i = 1; i <= n; i++) printf "%.0f%s", y[i] - x[i], (i < n ? " " : "\n") }'; }
# field-by-field sum of two snapshots or deltas
vadd() { awk -v a="$1" -v b="$2" 'BEGIN { n = split(b, y, " "); split(a, x, " "); for (i = 1; i <= n; i++) printf "%.0f%s", x[i] + y[i], (i < n ? " " : "\n") }'; }

# wrk output -> "requests rps non2xx socket_errors"
parse_wrk() {
    awk '
        /requests in/ { reqs = $1 }
        /^Requests\/sec:/ { rps = $2 }
        /Non-2xx or 3xx responses:/ { non2xx = $NF }
        /Socket errors:/ { gsub(",", ""); sockerr = $4 + $6 + $8 + $10 }
        END { printf "%s %s %d %d\n", (reqs == "" ? "NA" : reqs), (rps == "" ? "NA" : rps), non2xx, sockerr }' "$1"
}

HOT_LUA=$TMP/hot.lua
printf 'wrk.headers["X-Client"] = "hot"\n' >"$HOT_LUA"

# Starts wrk in the background (with a hard timeout); its pid is appended to WRK_PIDS.
start_wrk() { # threads connections seconds url outfile
    timeout -k 5 $(( $3 + 20 )) wrk -t"$1" -c"$2" -d"$3"s -s "$HOT_LUA" "$4" >"$5" 2>&1 &
    WRK_PIDS+=($!)
}
# Waits for every started wrk; fails if one failed. (Waiting, not running wrk in the
# foreground, lets a Ctrl-C run the INT trap at once.)
wait_wrks() {
    local pid rc=0
    for pid in "${WRK_PIDS[@]}"; do wait "$pid" || rc=$?; done
    WRK_PIDS=()
    return "$rc"
}

start_upstream
start_redis

SUMMARY=$TMP/summary.txt
: >"$SUMMARY"
MISSED=()
sum() { echo "$*" | tee -a "$SUMMARY"; }
# Sets V to "ok" or "MISSED", and remembers a miss. (Not in $(...): that would
# lose the MISSED entry in a subshell.)
verdict() { # 1-if-met label
    if [[ $1 == 1 ]]; then V=ok; else MISSED+=("$2"); V=MISSED; fi
}

# ---------------------------------------------------------------- a) economy
phase_a() {
    echo "== a) Redis economy: 1 gateway, 1000/s burst 1000 per X-Client; wrk -t2 -c16 -d${DURATION}s, X-Client: hot"
    start_gateway gw-a economy 1000 1s 1000 1 check-a
    local before after e0 e1 t0 t1 out=$TMP/wrk-a.txt
    local allowed limited fallback trips r429 r5xx rerr reqs rps non2xx sockerr
    before=$(snapshot gw-a)
    e0=$(evalsha_calls)
    t0=$(now_s)
    start_wrk 2 16 "$DURATION" "http://127.0.0.1:${PORT[gw-a]}/" "$out"
    wait_wrks || echo "   wrk exited non-zero (output in $out)" >&2
    t1=$(now_s)
    sleep "$IDLE_SETTLE" # count the lease given back when the key goes idle
    after=$(snapshot gw-a)
    e1=$(evalsha_calls)
    read -r allowed limited fallback trips r429 r5xx _ rerr <<<"$(delta "$before" "$after")"
    read -r reqs rps non2xx sockerr < <(parse_wrk "$out")
    local evalsha=$(( e1 - e0 ))
    local elapsed per_eval per_trip adm_s allowed_max
    elapsed=$(calc "printf \"%.3f\", $t1 - $t0")
    adm_s=$(calc "printf \"%.1f\", $allowed / $elapsed")
    allowed_max=$(calc "printf \"%.0f\", 1000 + 1000 * $elapsed")
    per_eval=$(calc "printf \"%.4f\", ($allowed > 0 ? $evalsha / $allowed : -1)")
    per_trip=$(calc "printf \"%.4f\", ($allowed > 0 ? $trips / $allowed : -1)")
    local ok_e ok_t v_e v_t
    ok_e=$(calc "print ($allowed > 0 && $per_eval < $MAX_PER_ADMITTED ? 1 : 0)")
    ok_t=$(calc "print ($allowed > 0 && $per_trip < $MAX_PER_ADMITTED ? 1 : 0)")
    verdict "$ok_e" a-evalsha; v_e=$V
    verdict "$ok_t" a-round-trips; v_t=$V
    sum "## a) Redis economy (1 gateway, policy 1000/s burst 1000, key X-Client: hot, wrk -t2 -c16 -d${DURATION}s)"
    sum "   offered:          $reqs requests in ${elapsed}s ($rps req/s by wrk), socket errors $sockerr"
    sum "   admitted:         $allowed ($adm_s/s), of at most $allowed_max = burst 1000 + 1000/s x ${elapsed}s (admitted/allowed $(calc "printf \"%.4f\", $allowed / $allowed_max"))"
    sum "   rejected:         limited $limited (429 by /metrics $r429, non-2xx by wrk $non2xx), fallback $fallback, 5xx $r5xx"
    sum "   EVALSHA calls:    $evalsha  ->  evalsha per admitted request     $per_eval  (target < $MAX_PER_ADMITTED: $v_e)"
    sum "   round trips:      $trips  ->  round trips per admitted request $per_trip  (target < $MAX_PER_ADMITTED: $v_t), Redis errors $rerr"
    stop_named gw-a
}

# ---------------------------------------------------------------- b) exactness
phase_b() {
    local gws=(gw-b1 gw-b2 gw-b3 gw-b4) g i
    echo "== b) exactness: 4 gateways sharing one bucket, 1000/s burst 100 per X-Client; 4 x wrk -t1 -c8 -d${DURATION}s at once"
    for i in "${!gws[@]}"; do start_gateway "${gws[i]}" exact 1000 1s 100 4 "check-b$((i + 1))"; done
    local e0 e1 t0 t1 snap
    local allowed limited fallback trips r429 r5xx rerr
    declare -A before=()
    for g in "${gws[@]}"; do before[$g]=$(snapshot "$g"); done
    e0=$(evalsha_calls)
    t0=$(now_s)
    for g in "${gws[@]}"; do start_wrk 1 8 "$DURATION" "http://127.0.0.1:${PORT[$g]}/" "$TMP/wrk-b-$g.txt"; done
    wait_wrks || echo "   a wrk exited non-zero (outputs in $TMP/wrk-b-*.txt)" >&2
    t1=$(now_s)
    # The admitted counts are final once wrk is done; the snapshot waits anyway, so
    # that the round trips include the leases given back.
    sleep "$IDLE_SETTLE"
    local total="0 0 0 0 0 0 0 0" d reqs=0 non2xx=0 sockerr=0 r n se per_gw=()
    for g in "${gws[@]}"; do
        snap=$(snapshot "$g")
        d=$(delta "${before[$g]}" "$snap")
        total=$(vadd "$total" "$d")
        per_gw+=("$g ${d%% *}")
        read -r r _ n se < <(parse_wrk "$TMP/wrk-b-$g.txt")
        [[ $r == NA ]] || reqs=$(( reqs + r ))
        non2xx=$(( non2xx + n ))
        sockerr=$(( sockerr + se ))
    done
    e1=$(evalsha_calls)
    read -r allowed limited fallback trips r429 r5xx _ rerr <<<"$total"
    local elapsed allowed_max ratio ok_r v_r v_f v_5
    elapsed=$(calc "printf \"%.3f\", $t1 - $t0")
    allowed_max=$(calc "printf \"%.0f\", 100 + 1000 * $elapsed")
    ratio=$(calc "printf \"%.4f\", $allowed / $allowed_max")
    ok_r=$(calc "print ($ratio >= $EXACT_MIN && $ratio <= $EXACT_MAX ? 1 : 0)")
    verdict "$ok_r" b-exactness; v_r=$V
    verdict $(( fallback == 0 ? 1 : 0 )) b-fallback; v_f=$V
    verdict $(( r5xx == 0 ? 1 : 0 )) b-5xx; v_5=$V
    sum "## b) exactness (4 gateways, one Redis, policy 1000/s burst 100, key X-Client: hot, 4 x wrk -t1 -c8 -d${DURATION}s)"
    sum "   offered:          $reqs requests in ${elapsed}s, socket errors $sockerr"
    sum "   admitted:         $allowed over the 4 instances ($(IFS=,; echo "${per_gw[*]}" | sed 's/,/, /g'))"
    sum "   allowed:          $allowed_max = burst 100 + 1000/s x ${elapsed}s"
    sum "   admitted/allowed: $ratio  (target $EXACT_MIN..$EXACT_MAX: $v_r)"
    sum "   fallback:         $fallback  (target 0: $v_f), Redis errors $rerr"
    sum "   5xx:              $r5xx  (target 0: $v_5); limited $limited (429 by /metrics $r429, non-2xx by wrk $non2xx)"
    sum "   EVALSHA calls:    $(( e1 - e0 )), round trips $trips ($(calc "printf \"%.4f\", ($allowed > 0 ? $trips / $allowed : -1)") per admitted request)"
    stop_named "${gws[@]}"
}

# ---------------------------------------------------------------- c) flood
phase_c() {
    echo "== c) flood on an exhausted key: 1 per 1h, burst 1; wrk -t2 -c16 -d${FLOOD_DURATION}s, X-Client: hot"
    start_gateway gw-c flood 1 1h 1 1 check-c
    local before after e0 e1 out=$TMP/wrk-c.txt
    local allowed limited fallback trips r429 r5xx rerr reqs rps non2xx sockerr
    before=$(snapshot gw-c)
    e0=$(evalsha_calls)
    start_wrk 2 16 "$FLOOD_DURATION" "http://127.0.0.1:${PORT[gw-c]}/" "$out"
    wait_wrks || echo "   wrk exited non-zero (output in $out)" >&2
    sleep "$IDLE_SETTLE"
    after=$(snapshot gw-c)
    e1=$(evalsha_calls)
    read -r allowed limited fallback trips r429 r5xx _ rerr <<<"$(delta "$before" "$after")"
    read -r reqs rps non2xx sockerr < <(parse_wrk "$out")
    local evalsha=$(( e1 - e0 )) v_e
    verdict $(( evalsha <= FLOOD_MAX_EVALSHA ? 1 : 0 )) c-evalsha; v_e=$V
    sum "## c) flood on an exhausted key (1 gateway, policy 1 per 1h burst 1, key X-Client: hot, wrk -t2 -c16 -d${FLOOD_DURATION}s)"
    sum "   requests:         $reqs ($rps req/s by wrk), socket errors $sockerr"
    sum "   429s:             $r429 by /metrics, $non2xx non-2xx by wrk; admitted $allowed (the burst: 1), fallback $fallback, 5xx $r5xx"
    sum "   EVALSHA calls:    $evalsha  (target <= $FLOOD_MAX_EVALSHA: $v_e), round trips $trips, Redis errors $rerr"
    stop_named gw-c
}

for p in "${PHASE_LIST[@]}"; do "phase_$p"; done

# Anything dead that should not be (Redis, the upstream) invalidates the run.
DIED=()
for i in "${!PROC_PIDS[@]}"; do
    if ! alive "${PROC_PIDS[i]}"; then
        DIED+=("${PROC_NAMES[i]}")
        echo "== WARNING: ${PROC_NAMES[i]} (pid ${PROC_PIDS[i]}) exited during the run; see its log in $TMP" >&2
    fi
done
for f in "$TMP"/gw-*.log; do
    [[ -f $f ]] || continue
    n=$(grep -cE ' (WARN|ERROR) ' "$f" || true)
    if (( n > 0 )); then
        echo "== $(basename "$f" .log) log: $n warning/error line(s), most frequent ($f):"
        grep -E ' (WARN|ERROR) ' "$f" | sed -E 's/^\[[^ ]+ //; s/[0-9]+/N/g' |
            sort | uniq -c | sort -rn | sed -n "1,4p" | cut -c1-200 | sed 's/^ */   /'
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
RESULT=$RESULTS_DIR/ratelimit-$stamp.txt
{
    echo "# gateway rate limiter test $stamp"
    echo "git_rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo NA)$(git -C "$ROOT" diff --quiet HEAD -- src 2>/dev/null || echo '+dirty')"
    echo "gateway_bin=$GATEWAY_BIN"
    echo "phases=${PHASE_LIST[*]} duration_s=$DURATION flood_duration_s=$FLOOD_DURATION gateway_threads=$THREADS access_log=$ACCESS_LOG idle_settle_s=$IDLE_SETTLE"
    echo "cpus=$(nproc) redis=$("$REDIS_SERVER" --version | awk '{ print $3 }') wrk=$(wrk -v 2>&1 | awk 'NR == 1 { print $2 }')"
    echo "load_start=$LOAD_START"
    echo "load_end=$(uptime | sed 's/.*load average: //')"
    (( ${#DIED[@]} == 0 )) || echo "died_during_run=${DIED[*]}"
    echo "tmp_dir=$TMP"
    cat "$SUMMARY"
} >"$RESULT"
echo
echo "== summary"
cat "$SUMMARY"
echo "== summary written to $RESULT"
