#!/usr/bin/env bash
# Load test: the gateway (full, with the rate limiter on, and --bare) against nginx
# as a reverse proxy (plain and with limit_req), all in front of the same nginx
# upstream, on loopback. See loadtest/README.md.
#
# Knobs (environment):
#   DURATION=8        seconds per wrk run
#   ROUNDS=3          interleaved rounds (each round runs every target once)
#   CONNECTIONS=64    wrk connections
#   WRK_THREADS=2     wrk threads
#   THREADS=2         gateway server.threads
#   TARGETS="upstream nginx nginx-limited gateway gateway-limited gateway-limited-redis gateway-bare"
#                     subset/order (spaces or commas)
#   ACCESS_LOG=on     gateway access log (on|off), written to a file in the temp dir
#   KEEP_ACCESS_LOG=0 keep the access-log files after the run (they can be hundreds of MB)
#   WARMUP=1          seconds of unrecorded wrk per target before round 1 (0: none)
#   GATEWAY_BIN=...   use this binary instead of `cargo build --release`
#   RESULTS_DIR=loadtest/results   where the summary file goes
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
WRK_THREADS=${WRK_THREADS:-2}
THREADS=${THREADS:-2}
ALL_TARGETS="upstream nginx nginx-limited gateway gateway-limited gateway-limited-redis gateway-bare"
TARGETS=${TARGETS:-$ALL_TARGETS}
ACCESS_LOG=${ACCESS_LOG:-on}
KEEP_ACCESS_LOG=${KEEP_ACCESS_LOG:-0}
WARMUP=${WARMUP:-1}
GATEWAY_BIN=${GATEWAY_BIN:-}
RESULTS_DIR=${RESULTS_DIR:-$SCRIPT_DIR/results}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
REDIS_SERVER=${REDIS_SERVER:-$(command -v redis-server || echo /usr/bin/redis-server)}
REDIS_CLI=${REDIS_CLI:-$(command -v redis-cli || echo /usr/bin/redis-cli)}
READY_TIMEOUT=10 # seconds to wait for each server to answer

die() { echo "run.sh: $*" >&2; exit 1; }
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

for v in DURATION ROUNDS CONNECTIONS WRK_THREADS THREADS; do
    is_uint "${!v}" && (( ${!v} > 0 )) || die "$v must be a positive integer, got '${!v}'"
done
is_uint "$WARMUP" || die "WARMUP must be a whole number of seconds, got '$WARMUP'"
case $ACCESS_LOG in
    on | off) ;;
    *) die "ACCESS_LOG must be on or off, got '$ACCESS_LOG'" ;;
esac
(( WRK_THREADS <= CONNECTIONS )) || WRK_THREADS=$CONNECTIONS

read -r -a TARGET_LIST <<<"${TARGETS//,/ }"
(( ${#TARGET_LIST[@]} > 0 )) || die "TARGETS is empty"
for t in "${TARGET_LIST[@]}"; do
    case $t in
        upstream | nginx | nginx-limited | gateway | gateway-limited | gateway-limited-redis | gateway-bare) ;;
        *) die "unknown target '$t' (choose from: $ALL_TARGETS)" ;;
    esac
done
want() { local t; for t in "${TARGET_LIST[@]}"; do [[ $t == "$1" ]] && return 0; done; return 1; }
# The full gateways (with /metrics, request ids, access log), in the default order.
FULL_GATEWAYS=()
for t in gateway gateway-limited gateway-limited-redis; do
    if want "$t"; then FULL_GATEWAYS+=("$t"); fi
done

tools=(wrk curl python3 timeout "$NGINX")
if want gateway-limited-redis; then tools+=("$REDIS_SERVER" "$REDIS_CLI"); fi
for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null || die "'$tool' not found"
done

# ---------------------------------------------------------------- processes & cleanup
TMP=$(mktemp -d "${TMPDIR:-/tmp}/gateway-loadtest.XXXXXX")
declare -a PROC_NAMES=() PROC_PIDS=()

alive() { # pid: running (a zombie not yet reaped does not count)
    local st
    st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ -n $st && $st != Z* ]]
}

stop_all() {
    local i pid deadline any kids=()
    if [[ -n ${WRK_PID:-} ]] && alive "$WRK_PID"; then
        kill -TERM "$WRK_PID" 2>/dev/null || true # timeout passes it on to wrk
        PROC_PIDS+=("$WRK_PID")
    fi
    # Newest first: gateways (they give their Redis leases back), then Redis, the
    # nginx proxies, the upstream.
    for (( i = ${#PROC_PIDS[@]} - 1; i >= 0; i-- )); do
        pid=${PROC_PIDS[i]}
        alive "$pid" || continue
        # Remember the children (nginx workers) in case the master must be killed.
        # shellcheck disable=SC2207
        kids+=($(ps -o pid= --ppid "$pid" 2>/dev/null || true))
        kill -TERM "$pid" 2>/dev/null || true # nginx: fast shutdown; gateway: graceful (~2 s here)
    done
    deadline=$(( SECONDS + 8 ))
    while (( SECONDS < deadline )); do
        any=0
        for pid in "${PROC_PIDS[@]}" "${kids[@]}"; do alive "$pid" && any=1 && break; done
        (( any )) || break
        sleep 0.1
    done
    for pid in "${PROC_PIDS[@]}" "${kids[@]}"; do
        if alive "$pid"; then
            echo "run.sh: pid $pid did not stop after SIGTERM; sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    for pid in "${PROC_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PROC_PIDS=()
    PROC_NAMES=()
}

cleanup() {
    local rc=$?
    trap '' INT TERM HUP # let the clean-up finish; it is bounded (~8 s)
    trap - EXIT
    set +e
    stop_all
    if [[ $KEEP_ACCESS_LOG != 1 ]]; then
        rm -f "$TMP"/gateway*-access.log
    fi
    rm -rf "$TMP/bin" # the private copy of the gateway binary (~50 MB)
    echo "temp dir (raw wrk outputs, configs, logs): $TMP" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "run.sh: interrupted" >&2; exit 130' INT
trap 'echo "run.sh: terminated" >&2; exit 143' TERM
trap 'echo "run.sh: hung up" >&2; exit 129' HUP

started() { PROC_NAMES+=("$1"); PROC_PIDS+=("$2"); }

# Polls until URL answers 2xx (and, when EXPECT is given, with that body), the
# process dies, or READY_TIMEOUT passes.
wait_ready() { # name pid url [expected-body] [logfile]
    local name=$1 pid=$2 url=$3 expect=${4:-} log=${5:-} body
    local deadline=$(( SECONDS + READY_TIMEOUT ))
    while :; do
        if ! alive "$pid"; then
            echo "run.sh: $name (pid $pid) exited during start-up" >&2
            [[ -n $log && -f $log ]] && tail -n 20 "$log" >&2
            return 1
        fi
        if body=$(curl -fsS --max-time 1 "$url" 2>/dev/null) && [[ -z $expect || $body == "$expect" ]]; then
            return 0
        fi
        if (( SECONDS >= deadline )); then
            echo "run.sh: $name not ready at $url after ${READY_TIMEOUT}s" >&2
            [[ -n $log && -f $log ]] && tail -n 20 "$log" >&2
            return 1
        fi
        sleep 0.1
    done
}

# KEY=VALUE replaces @KEY@. +SECTION keeps the template's lines that start with
# "#+SECTION " (without that marker); lines of sections not given are dropped.
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

show_load() { # label
    echo "== machine load ($1): $(uptime)"
    if command -v top >/dev/null; then
        top -b -n 1 -o %CPU 2>/dev/null | awk 'NR > 7 && $9 + 0 >= 5 { printf "   %5s%% cpu  %s (pid %s)\n", $9, $12, $1 }' | head -n 5 || true
    fi
}

# ---------------------------------------------------------------- set-up
echo "== gateway load test: DURATION=${DURATION}s ROUNDS=$ROUNDS CONNECTIONS=$CONNECTIONS WRK_THREADS=$WRK_THREADS THREADS=$THREADS ACCESS_LOG=$ACCESS_LOG TARGETS='${TARGET_LIST[*]}'"
echo "== temp dir: $TMP"
show_load start
LOAD_START=$(uptime | sed 's/.*load average: //')

if (( ${#FULL_GATEWAYS[@]} > 0 )) || want gateway-bare; then
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
fi

# Twelve distinct free loopback ports, held open together while they are chosen.
ports=$(python3 -c '
import socket
socks = []
for _ in range(12):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
')
read -r P_UPSTREAM P_NGINX P_NGINX_LIM P_GW P_GW_ADMIN P_BARE P_BARE_ADMIN \
    P_GWL P_GWL_ADMIN P_GWLR P_GWLR_ADMIN P_REDIS <<<"$ports"
declare -A PORT=(
    [upstream]=$P_UPSTREAM [nginx]=$P_NGINX [nginx-limited]=$P_NGINX_LIM
    [gateway]=$P_GW [gateway-limited]=$P_GWL [gateway-limited-redis]=$P_GWLR [gateway-bare]=$P_BARE
)
declare -A ADMIN_PORT=(
    [gateway]=$P_GW_ADMIN [gateway-limited]=$P_GWL_ADMIN [gateway-limited-redis]=$P_GWLR_ADMIN
    [gateway-bare]=$P_BARE_ADMIN
)

if (( EUID == 0 )); then USER_DIRECTIVE="user root;"; else USER_DIRECTIVE=""; fi

start_nginx() { # name port template [extra KEY=VALUE...]
    local name=$1 port=$2 tmpl=$3 d
    shift 3
    for d in body proxy fastcgi uwsgi scgi; do mkdir -p "$TMP/$name-tmp/$d"; done
    mkdir -p "$TMP/$name-prefix"
    render "$tmpl" "$TMP/$name.conf" DIR="$TMP" NAME="$name" PORT="$port" USER_DIRECTIVE="$USER_DIRECTIVE" "$@"
    "$NGINX" -t -q -p "$TMP/$name-prefix/" -c "$TMP/$name.conf" -e "$TMP/$name-error.log" \
        || die "$name: nginx -t failed for $TMP/$name.conf"
    "$NGINX" -p "$TMP/$name-prefix/" -c "$TMP/$name.conf" -e "$TMP/$name-error.log" \
        >"$TMP/$name.out" 2>&1 &
    started "$name" $!
    wait_ready "$name" $! "http://127.0.0.1:$port/" ok "$TMP/$name-error.log"
    echo "== $name: nginx pid $(cat "$TMP/$name.pid" 2>/dev/null || echo '?') on 127.0.0.1:$port"
}

gateway_conf() { # name port admin-port [+SECTION...]: renders and validates $TMP/name.yaml
    local name=$1 port=$2 admin=$3 conf=$TMP/$1.yaml enabled=true check
    shift 3
    [[ $ACCESS_LOG == on ]] || enabled=false
    render "$SCRIPT_DIR/gateway.yaml.tmpl" "$conf" DIR="$TMP" NAME="$name" PORT="$port" \
        ADMIN_PORT="$admin" THREADS="$THREADS" UPSTREAM_PORT="$P_UPSTREAM" REDIS_PORT="$P_REDIS" \
        ACCESS_LOG_ENABLED="$enabled" ACCESS_LOG_FILE="$TMP/$name-access.log" "$@"
    check=$("$GW" --check-config "$conf" 2>&1) || die "$name: invalid config $conf: $check"
    [[ $check == ok ]] || die "$name: '$GW --check-config' printed '$check', not 'ok' (is it a real gateway build?)"
}

start_gateway() { # name port admin-port [--bare]
    local name=$1 port=$2 admin=$3 bare=${4:-} conf=$TMP/$1.yaml log=$TMP/$1.log
    # shellcheck disable=SC2086
    "$GW" $bare -c "$conf" >"$log" 2>&1 &
    started "$name" $!
    local pid=$!
    if [[ -z $bare ]]; then
        # Ready = the health check saw the upstream, and a request goes through.
        wait_ready "$name /readyz" "$pid" "http://127.0.0.1:$admin/readyz" "" "$log"
    fi
    wait_ready "$name" "$pid" "http://127.0.0.1:$port/" ok "$log"
    if [[ -n $bare ]]; then
        echo "== $name ($bare): pid $pid on 127.0.0.1:$port"
    else
        echo "== $name: pid $pid on 127.0.0.1:$port (admin 127.0.0.1:$admin)"
    fi
}

start_redis() { # name port
    local name=$1 port=$2 pid deadline=$(( SECONDS + READY_TIMEOUT ))
    "$REDIS_SERVER" --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$TMP" --logfile "$TMP/$name.log" --daemonize no >"$TMP/$name.out" 2>&1 &
    pid=$!
    started "$name" "$pid"
    until [[ $("$REDIS_CLI" -h 127.0.0.1 -p "$port" ping 2>/dev/null) == PONG ]]; do
        if ! alive "$pid"; then
            echo "run.sh: $name (pid $pid) exited during start-up" >&2
            tail -n 20 "$TMP/$name.log" "$TMP/$name.out" >&2 2>/dev/null
            return 1
        fi
        if (( SECONDS >= deadline )); then
            echo "run.sh: $name not ready on 127.0.0.1:$port after ${READY_TIMEOUT}s" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "== $name: pid $pid on 127.0.0.1:$port ($("$REDIS_SERVER" --version | awk '{ print $3 }'))"
}
redis_evalsha_calls() { # Redis's count of EVALSHA commands (one per key per lease round trip)
    "$REDIS_CLI" -h 127.0.0.1 -p "$P_REDIS" info commandstats 2>/dev/null |
        awk -F'[:=,]' '/^cmdstat_evalsha:/ { n = $3 } END { print n + 0 }'
}

metrics_of() { # gateway-name: its /metrics text (empty on failure)
    curl -fsS --max-time 5 "http://127.0.0.1:${ADMIN_PORT[$1]}/metrics" 2>/dev/null || true
}
# Sum of the samples of metric NAME whose labels match the regex FILTER; NA when the
# metrics text is empty.
metric_sum() { # metrics-text name [label-regex]
    awk -v name="$2" -v filt="${3:-}" '
        NF { n++ }
        index($0, name) == 1 && (substr($0, length(name) + 1, 1) ~ /[{ ]/) && (filt == "" || $0 ~ filt) { s += $NF }
        END { print (n ? s + 0 : "NA") }' <<<"$1"
}

# Configs first, so a bad binary or template fails before anything is started.
if want gateway; then gateway_conf gateway "$P_GW" "$P_GW_ADMIN"; fi
# The limited gateways: one policy so high that it never rejects, keyed by client
# IP (wrk's connections all come from 127.0.0.1: one hot key).
HIGH_POLICY=(POLICY=high RATE=100000000 PER=1s BURST=100000000 KEY=client_ip INSTANCES=1)
if want gateway-limited; then
    gateway_conf gateway-limited "$P_GWL" "$P_GWL_ADMIN" +LIMITED "${HIGH_POLICY[@]}"
fi
if want gateway-limited-redis; then
    gateway_conf gateway-limited-redis "$P_GWLR" "$P_GWLR_ADMIN" +LIMITED +REDIS "${HIGH_POLICY[@]}"
fi
if want gateway-bare; then gateway_conf gateway-bare "$P_BARE" "$P_BARE_ADMIN"; fi

start_nginx nginx-upstream "$P_UPSTREAM" "$SCRIPT_DIR/nginx-upstream.conf.tmpl"
if want nginx; then
    start_nginx nginx-proxy "$P_NGINX" "$SCRIPT_DIR/nginx-proxy.conf.tmpl" UPSTREAM_PORT="$P_UPSTREAM"
fi
if want nginx-limited; then
    start_nginx nginx-limited "$P_NGINX_LIM" "$SCRIPT_DIR/nginx-proxy.conf.tmpl" UPSTREAM_PORT="$P_UPSTREAM" +LIMITED
    grep -q 'limit_req zone=' "$TMP/nginx-limited.conf" || die "nginx-limited: no limit_req in $TMP/nginx-limited.conf"
fi
if want gateway-limited-redis; then
    start_redis redis "$P_REDIS"
fi
for t in "${FULL_GATEWAYS[@]}"; do
    start_gateway "$t" "${PORT[$t]}" "${ADMIN_PORT[$t]}"
done
if want gateway-bare; then
    start_gateway gateway-bare "$P_BARE" "$P_BARE_ADMIN" --bare
fi

# Each full gateway must really proxy and add a request id; the limited ones must
# also have gone through the limiter (RateLimit headers, an allowed decision),
# and the Redis one must have had its lease from Redis (no fallback decision).
check_gateway() { # name
    local name=$1 hdrs=$TMP/check-$1.headers body rid rl metrics allowed fallback trips
    body=$(curl -sS --max-time 5 -D "$hdrs" "http://127.0.0.1:${PORT[$name]}/loadtest-check") \
        || die "$name check request failed"
    [[ $body == ok ]] || die "$name check: expected body 'ok', got '$body'"
    rid=$(awk 'tolower($1) == "x-request-id:" { print $2 }' "$hdrs" | tr -d '\r')
    [[ -n $rid ]] || die "$name check: no x-request-id response header (headers in $hdrs)"
    if [[ $name == gateway ]]; then
        echo "== $name check: body 'ok', x-request-id: $rid"
        return 0
    fi
    rl=$(awk 'tolower($1) == "ratelimit:" { print $2 }' "$hdrs" | tr -d '\r')
    [[ -n $rl ]] || die "$name check: no RateLimit response header: is the limiter on? (headers in $hdrs)"
    metrics=$(metrics_of "$name")
    allowed=$(metric_sum "$metrics" gateway_ratelimit_decisions_total 'outcome="allowed"')
    fallback=$(metric_sum "$metrics" gateway_ratelimit_decisions_total 'outcome="fallback"')
    trips=$(metric_sum "$metrics" gateway_ratelimit_redis_round_trips_total)
    [[ $allowed != NA ]] && (( allowed > 0 )) || die "$name check: no allowed rate-limit decision in /metrics"
    if [[ $name == gateway-limited-redis ]]; then
        (( fallback == 0 )) || die "$name check: $fallback fallback decision(s): Redis not used (see $TMP/$name.log)"
        (( trips > 0 )) || die "$name check: no Redis round trip in /metrics"
        echo "== $name check: body 'ok', x-request-id: $rid, RateLimit: $rl, Redis round trips $trips, EVALSHA calls $(redis_evalsha_calls)"
    else
        echo "== $name check: body 'ok', x-request-id: $rid, RateLimit: $rl"
    fi
}
for t in "${FULL_GATEWAYS[@]}"; do check_gateway "$t"; done

declare -A URL=()
for t in "${TARGET_LIST[@]}"; do URL[$t]="http://127.0.0.1:${PORT[$t]}/"; done

# ---------------------------------------------------------------- measurement
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

# wrk runs in the background and the script waits for it: a Ctrl-C then interrupts
# `wait` and runs the INT trap at once. (With wrk in the foreground, wrk catches
# SIGINT and exits normally, and bash then ignores the Ctrl-C and carries on.)
WRK_PID=
run_wrk() { # seconds url outfile
    local rc=0
    timeout -k 5 $(( $1 + 20 )) \
        wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$1"s --latency "$2" >"$3" 2>&1 &
    WRK_PID=$!
    wait "$WRK_PID" || rc=$?
    WRK_PID=
    return "$rc"
}

RAW=$TMP/raw
mkdir -p "$RAW"
RUNS=$TMP/runs.tsv
printf 'round\ttarget\trps\tp50_ms\tp99_ms\tnon2xx\tsocket_errors\trequests\twrk_rc\n' >"$RUNS"

if (( WARMUP > 0 )); then
    echo "== warm-up: ${WARMUP}s per target (not recorded)"
    for t in "${TARGET_LIST[@]}"; do
        run_wrk "$WARMUP" "${URL[$t]}" "$RAW/warmup-$t.txt" || echo "   warm-up of $t: wrk exited $?" >&2
    done
fi

echo "== $ROUNDS round(s) x ${#TARGET_LIST[@]} target(s) x ${DURATION}s (raw outputs in $RAW)"
for (( r = 1; r <= ROUNDS; r++ )); do
    for t in "${TARGET_LIST[@]}"; do
        out=$RAW/round$r-$t.txt
        rc=0
        run_wrk "$DURATION" "${URL[$t]}" "$out" || rc=$?
        read -r rps p50 p99 non2xx sockerr reqs < <(parse_wrk "$out")
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$t" "$rps" "$p50" "$p99" "$non2xx" "$sockerr" "$reqs" "$rc" >>"$RUNS"
        printf '   round %d  %-21s %10s req/s  p50 %8s ms  p99 %8s ms%s\n' "$r" "$t" "$rps" "$p50" "$p99" \
            "$( (( rc != 0 )) && echo "  (wrk exit $rc)" || true)$( (( non2xx + sockerr > 0 )) && echo "  non-2xx $non2xx, socket errors $sockerr" || true)"
    done
done

# ---------------------------------------------------------------- summary
median() { # column-number target  (over runs.tsv, NA skipped)
    awk -F'\t' -v c="$1" -v t="$2" 'NR > 1 && $2 == t && $c != "NA" { print $c }' "$RUNS" | sort -g |
        awk '{ a[NR] = $1 } END {
            if (NR == 0) { print "NA"; exit }
            if (NR % 2) printf "%.3f\n", a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
sum_col() { awk -F'\t' -v c="$1" -v t="$2" 'NR > 1 && $2 == t { s += $c } END { print s + 0 }' "$RUNS"; }

declare -A MED_RPS MED_P50 MED_P99
for t in "${TARGET_LIST[@]}"; do
    MED_RPS[$t]=$(median 3 "$t")
    MED_P50[$t]=$(median 4 "$t")
    MED_P99[$t]=$(median 5 "$t")
done
ratio() { # target base: median req/s of target / base's, "-" when either is missing
    local base=${MED_RPS[$2]:-NA} v=${MED_RPS[$1]:-NA}
    if [[ $base == NA || $v == NA ]]; then echo "-"; else awk -v a="$v" -v b="$base" 'BEGIN { printf (b > 0 ? "%.2f" : "-"), a / b }'; fi
}
ratio_gw() { # vs the full gateway: only for the gateways (the limiter's cost, or --bare's saving)
    case $1 in gateway*) ratio "$1" gateway ;; *) echo "-" ;; esac
}

SUMMARY=$TMP/summary.tsv
printf 'target\tmedian_rps\tmedian_p50_ms\tmedian_p99_ms\trps_vs_nginx\trps_vs_gateway\tnon2xx_total\tsocket_errors_total\n' >"$SUMMARY"
for t in "${TARGET_LIST[@]}"; do
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "${MED_RPS[$t]}" "${MED_P50[$t]}" "${MED_P99[$t]}" \
        "$(ratio "$t" nginx)" "$(ratio_gw "$t")" "$(sum_col 6 "$t")" "$(sum_col 7 "$t")" >>"$SUMMARY"
done

echo
echo "== medians over $ROUNDS round(s), ${DURATION}s each, $CONNECTIONS connections"
awk -F'\t' '
    NR == 1 { printf "%-22s %10s %9s %9s %9s %10s %8s %8s\n", "target", "req/s", "p50 ms", "p99 ms", "vs nginx", "vs gateway", "non-2xx", "sock-err"; next }
    {
        rps = ($2 == "NA" ? "NA" : sprintf("%.0f", $2))
        p50 = ($3 == "NA" ? "NA" : sprintf("%.3f", $3))
        p99 = ($4 == "NA" ? "NA" : sprintf("%.3f", $4))
        printf "%-22s %10s %9s %9s %9s %10s %8s %8s\n", $1, rps, p50, p99, $5, $6, $7, $8
    }' "$SUMMARY"
COST=()
if want nginx-limited && want nginx; then COST+=("nginx-limited/nginx $(ratio nginx-limited nginx)"); fi
for t in gateway-limited gateway-limited-redis; do
    if want "$t" && want gateway; then COST+=("$t/gateway $(ratio "$t" gateway)"); fi
done
if (( ${#COST[@]} > 0 )); then
    echo "== limiter cost, req/s with the limiter on / off (1.00 = free): $(IFS=,; echo "${COST[*]}" | sed 's/,/, /g')"
fi
echo

# A server that died during the run invalidates its numbers (and is a bug).
DIED=()
for i in "${!PROC_PIDS[@]}"; do
    if ! alive "${PROC_PIDS[i]}"; then
        DIED+=("${PROC_NAMES[i]}")
        echo "== WARNING: ${PROC_NAMES[i]} (pid ${PROC_PIDS[i]}) exited during the run; see its log in $TMP" >&2
    fi
done

GW_NOTES=() # one line of key=value per gateway, for the results file
for g in "${FULL_GATEWAYS[@]}"; do
    notes=()
    metrics=$(metrics_of "$g")
    [[ -n $metrics ]] || echo "== WARNING: could not read $g's /metrics" >&2
    gw_5xx=$(metric_sum "$metrics" gateway_requests_total 'status="5[0-9][0-9]"')
    gw_429=$(metric_sum "$metrics" gateway_requests_total 'status="429"')
    gw_total=$(metric_sum "$metrics" gateway_requests_total)
    gw_dropped=$(metric_sum "$metrics" gateway_access_log_dropped_total)
    notes+=("${g}_5xx=$gw_5xx" "${g}_429=$gw_429" "${g}_requests_total=$gw_total" "${g}_access_log_dropped=$gw_dropped")
    echo "== $g /metrics: $gw_5xx responses with status 5xx, $gw_429 with 429, $gw_total requests in total, access-log lines dropped: $gw_dropped"
    if [[ $g != gateway ]]; then
        allowed=$(metric_sum "$metrics" gateway_ratelimit_decisions_total 'outcome="allowed"')
        limited=$(metric_sum "$metrics" gateway_ratelimit_decisions_total 'outcome="limited"')
        fallback=$(metric_sum "$metrics" gateway_ratelimit_decisions_total 'outcome="fallback"')
        trips=$(metric_sum "$metrics" gateway_ratelimit_redis_round_trips_total)
        rerrs=$(metric_sum "$metrics" gateway_ratelimit_redis_errors_total)
        notes+=("${g}_ratelimit_allowed=$allowed" "${g}_ratelimit_limited=$limited" "${g}_ratelimit_fallback=$fallback")
        line="   rate-limit decisions: allowed $allowed, limited $limited, fallback $fallback"
        if [[ $g == gateway-limited-redis ]]; then
            evalsha=$(redis_evalsha_calls)
            notes+=("${g}_redis_round_trips=$trips" "${g}_redis_errors=$rerrs" "redis_evalsha_calls=$evalsha")
            line+="; Redis round trips $trips ($(awk -v a="$trips" -v b="$gw_total" 'BEGIN { printf (b > 0 ? "%.5f" : "NA"), a / b }') per request), EVALSHA calls $evalsha, Redis errors $rerrs"
        fi
        echo "$line"
        if [[ $limited != 0 || $fallback != 0 ]]; then
            echo "== WARNING: $g limited $limited and fell back $fallback time(s); the policy should never reject" >&2
        fi
    fi
    if [[ $ACCESS_LOG == on && -f $TMP/$g-access.log ]]; then
        lines=$(wc -l <"$TMP/$g-access.log")
        echo "   access log: $lines lines, $(du -h "$TMP/$g-access.log" | cut -f1)"
        notes+=("${g}_access_log_lines=$lines")
    fi
    GW_NOTES+=("${notes[*]}")
done
if want nginx-limited; then
    # limit_req logs each rejection at "error" level; error_log is at "warn".
    n=$(grep -c 'limiting requests' "$TMP/nginx-limited-error.log" 2>/dev/null || true)
    echo "== nginx-limited: ${n:-0} request(s) rejected by limit_req (from its error log)"
    GW_NOTES+=("nginx_limited_rejected=${n:-0}")
fi
for t in "${TARGET_LIST[@]}"; do
    echo "== $t: wrk non-2xx/3xx responses $(sum_col 6 "$t"), socket errors $(sum_col 7 "$t")"
done
for name in "${FULL_GATEWAYS[@]}" gateway-bare; do
    want "$name" || continue
    n=$(grep -cE ' (WARN|ERROR) ' "$TMP/$name.log" || true)
    if (( n > 0 )); then
        echo "== $name log: $n warning/error line(s), most frequent ($TMP/$name.log):"
        grep -E ' (WARN|ERROR) ' "$TMP/$name.log" | sed -E 's/^\[[^ ]+ //; s/[0-9]+/N/g' |
            sort | uniq -c | sort -rn | sed -n "1,4p" | cut -c1-200 | sed 's/^ */   /'
    fi
done
show_load end

# Machine-readable summary, kept in the repository's loadtest/results/.
mkdir -p "$RESULTS_DIR"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
RESULT=$RESULTS_DIR/$stamp.txt
{
    echo "# gateway load test $stamp"
    echo "git_rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo NA)$(git -C "$ROOT" diff --quiet HEAD -- src 2>/dev/null || echo '+dirty')"
    echo "gateway_bin=${GATEWAY_BIN:-NA}"
    echo "duration_s=$DURATION rounds=$ROUNDS connections=$CONNECTIONS wrk_threads=$WRK_THREADS gateway_threads=$THREADS access_log=$ACCESS_LOG warmup_s=$WARMUP"
    echo "cpus=$(nproc) nginx=$("$NGINX" -v 2>&1 | sed 's|.*/||') wrk=$(wrk -v 2>&1 | awk 'NR == 1 { print $2 }')"
    echo "load_start=$LOAD_START"
    echo "load_end=$(uptime | sed 's/.*load average: //')"
    (( ${#GW_NOTES[@]} == 0 )) || printf '%s\n' "${GW_NOTES[@]}"
    (( ${#DIED[@]} == 0 )) || echo "died_during_run=${DIED[*]}"
    echo "raw_dir=$RAW"
    echo "## summary"
    cat "$SUMMARY"
    echo "## runs"
    cat "$RUNS"
} >"$RESULT"
echo "== summary written to $RESULT"
echo "== raw wrk outputs: $RAW"
